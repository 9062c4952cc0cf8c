"""The per-character engine of the Generator: an LSTM step in numpy, and choosing a character.

At batch 1 each step reads every weight once to do a few matrix-vector products, so memory
bandwidth bounds it, not arithmetic; numpy does this with far less per-call overhead than a
TensorFlow call. The same code steps many rows at once (one per sample) for little extra cost.
"""

from __future__ import annotations

import os

import numpy as np

State = list[tuple[np.ndarray, np.ndarray]]


def _ifog(units: int) -> np.ndarray:
    """Column order that turns Keras's gate blocks (i, f, c, o) into (i, f, o, c)."""
    return np.concatenate([np.arange(k * units, (k + 1) * units) for k in (0, 1, 3, 2)])


class NumpyLSTM:
    """Embedding -> LSTM layers -> Dense, one time step for R rows, using Keras's gate order (i, f, c, o)."""

    def __init__(self, embedding, layers, dense_kernel, dense_bias):
        first_kernel, first_rec, first_bias = layers[0]
        # Embedding and the first layer's input projection fold into one table: id -> 4u pre-activations.
        self.first_table = (embedding @ first_kernel + first_bias).astype(np.float32)
        self.first_rec = first_rec.astype(np.float32)
        # Deeper layers: [x, h] @ [kernel; recurrent] is one matrix product instead of two plus an add.
        self.stacked = [(np.vstack([k, r]).astype(np.float32), b.astype(np.float32)) for k, r, b in layers[1:]]
        self.dense_kernel = dense_kernel.astype(np.float32)
        self.dense_bias = dense_bias.astype(np.float32)
        # The step's own copies with the gate blocks reordered to (i, f, o, g): the three sigmoid
        # gates are then one contiguous slice, so a layer costs ~12 numpy calls instead of ~20
        # (at batch 1 the per-call overhead is a third of the step). The attributes above keep
        # Keras's order for anything else built from them (chargen.exporting).
        u0 = self.first_rec.shape[0]
        self._first = (self.first_table[:, _ifog(u0)].copy(), self.first_rec[:, _ifog(u0)].copy())
        self._deeper = [(k[:, _ifog(k.shape[1] // 4)].copy(), b[_ifog(k.shape[1] // 4)].copy()) for k, b in self.stacked]

    @classmethod
    def from_keras(cls, model) -> "NumpyLSTM":
        get = {v.path.split("/", 1)[0] + "/" + v.path.rsplit("/", 1)[-1]: v.numpy() for v in model.weights}
        n = sum(1 for k in get if k.endswith("/recurrent_kernel"))
        layers = [(get[f"lstm_{i}/kernel"], get[f"lstm_{i}/recurrent_kernel"], get[f"lstm_{i}/bias"]) for i in range(n)]
        return cls(get["embedding/embeddings"], layers, get["logits/kernel"], get["logits/bias"])

    def step(self, ids: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """ids (R,) -> (logits (R, V), new state). Pure: the given state is not modified."""
        new_state = []
        x = None
        for i, (h, c) in enumerate(state):
            if i == 0:
                table, rec = self._first
                z = table[ids]  # a fresh array (fancy indexing copies), updated in place below
                z += h @ rec
            else:
                stacked, bias = self._deeper[i - 1]
                z = np.concatenate([x, h], axis=1) @ stacked
                z += bias
            u = h.shape[1]
            gates = z[:, :3 * u]  # i, f, o: sigmoid(x) = (tanh(x / 2) + 1) / 2, in place
            gates *= 0.5
            np.tanh(gates, out=gates)
            gates += 1.0
            gates *= 0.5
            g = np.tanh(z[:, 3 * u:])
            c = gates[:, u:2 * u] * c
            g *= gates[:, :u]
            c += g
            h = np.tanh(c)
            h *= gates[:, 2 * u:3 * u]
            new_state.append((h, c))
            x = h
        return x @ self.dense_kernel + self.dense_bias, new_state


def step_threads() -> int:
    """Threads for the per-character step: 2 where two cores are ours, else 1 (CHARGEN_THREADS overrides)."""
    wanted = os.environ.get("CHARGEN_THREADS", "")
    if wanted.strip() in ("1", "2"):
        return int(wanted)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 2 if cores >= 2 else 1


def make_stepper(lstm: NumpyLSTM, threads: int | None = None):
    """The step the Generator uses: `lstm`'s own on one thread; on two, many rows split in halves."""
    if (threads or step_threads()) < 2:
        return lstm
    from chargen.twothreads import RowHalves

    return RowHalves(lstm)


def pick(logits: np.ndarray, temperature: float, top_k: int, top_p: float, rng: np.random.Generator) -> np.ndarray:
    """One character id per row of logits (R, V): greedy at temperature 0, else sampled."""
    if temperature == 0:
        return np.argmax(logits, axis=-1)
    z = logits.astype(np.float64) / temperature
    if top_k == 0 and top_p >= 1.0:  # the common case, in as few numpy calls as possible (it runs per character)
        z -= z.max(axis=-1, keepdims=True)
        cum = np.cumsum(np.exp(z, out=z), axis=-1)
        u = rng.random((cum.shape[0], 1)) * cum[:, -1:]
        return np.minimum((cum < u).sum(axis=-1), cum.shape[-1] - 1)
    if 0 < top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-p, axis=-1)
        sorted_p = np.take_along_axis(p, order, axis=-1)
        cum = np.cumsum(sorted_p, axis=-1)
        drop_sorted = cum - sorted_p >= top_p  # keep the smallest prefix reaching top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        p = np.where(drop, 0.0, p)
        p /= p.sum(axis=-1, keepdims=True)
    u = rng.random((p.shape[0], 1))
    idx = (np.cumsum(p, axis=-1) < u).sum(axis=-1)
    return np.minimum(idx, p.shape[-1] - 1)
