"""The per-character engine of the Generator: an LSTM step in numpy, and choosing a character.

At batch 1 each step reads every weight once to do a few matrix-vector products, so memory
bandwidth bounds it, not arithmetic; numpy does this with far less per-call overhead than a
TensorFlow call. The same code steps many rows at once (one per sample); those are products
bound by arithmetic, done per layer in two halves that chargen.cores can run side by side.
"""

from __future__ import annotations

import numpy as np

State = list[tuple[np.ndarray, np.ndarray]]
# Below this temperature a float32 logit gap divided by it can overflow float64 (2 * 3.4e38 / 1.8e308).
_MAY_OVERFLOW = 2 * float(np.finfo(np.float32).max) / float(np.finfo(np.float64).max)


def _gate_columns(units: int, lo: int, hi: int) -> np.ndarray:
    """Columns of a Keras gate-block matrix (i, f, c, o; `units` each) for units [lo, hi), as (i, f, o, c)."""
    return np.concatenate([np.arange(k * units + lo, k * units + hi) for k in (0, 1, 3, 2)])


Part = tuple[np.ndarray, np.ndarray, slice]  # (kernel, added pre-activations, units): all four gates of some units


def run_in_turn(cell, jobs: list[tuple]) -> list:
    """Run the cell for each part of a layer, one after another on this thread."""
    return [cell(*job) for job in jobs]


class NumpyLSTM:
    """Embedding -> LSTM layers -> Dense, one time step for R rows, from Keras's weights (gates i, f, c, o)."""

    def __init__(self, embedding, layers, dense_kernel, dense_bias):
        first_kernel, first_rec, first_bias = layers[0]
        # Embedding and the first layer's input projection fold into one table: id -> 4u pre-activations.
        self.first_table = (embedding @ first_kernel + first_bias).astype(np.float32)
        self.first_rec = first_rec.astype(np.float32)
        # Deeper layers: [x, h] @ [kernel; recurrent] is one matrix product instead of two plus an add.
        self.stacked = [(np.vstack([k, r]).astype(np.float32), b.astype(np.float32)) for k, r, b in layers[1:]]
        self.dense_kernel = dense_kernel.astype(np.float32)
        self.dense_bias = dense_bias.astype(np.float32)
        # The attributes above keep Keras's order for anything else built from them (chargen/exporters/step.py).
        # The step's own copies reorder the gate blocks to (i, f, o, g), so the three sigmoid gates
        # are one contiguous slice (a layer is ~12 numpy calls instead of ~20; at batch 1 the
        # per-call overhead is a third of the step).
        self._whole = self._parts(halves=False)
        self._halves: list[list[Part]] | None = None

    def _parts(self, halves: bool) -> list[list[Part]]:
        """Per layer, its weights whole or cut into two halves of its units, each part with all four gates."""
        layers = []
        for kernel, added in [(self.first_rec, self.first_table)] + self.stacked:
            units = kernel.shape[1] // 4
            cuts = [0, units // 2, units] if halves and units >= 2 else [0, units]
            layers.append([(np.ascontiguousarray(kernel[:, cols]), np.ascontiguousarray(added[..., cols]), slice(lo, hi))
                           for lo, hi in zip(cuts, cuts[1:]) for cols in [_gate_columns(units, lo, hi)]])
        return layers

    @classmethod
    def from_keras(cls, model) -> "NumpyLSTM":
        get = {v.path.split("/", 1)[0] + "/" + v.path.rsplit("/", 1)[-1]: v.numpy() for v in model.weights}
        n = sum(1 for k in get if k.endswith("/recurrent_kernel"))
        layers = [(get[f"lstm_{i}/kernel"], get[f"lstm_{i}/recurrent_kernel"], get[f"lstm_{i}/bias"]) for i in range(n)]
        return cls(get["embedding/embeddings"], layers, get["logits/kernel"], get["logits/bias"])

    def step(self, ids: np.ndarray, state: State, run=run_in_turn) -> tuple[np.ndarray, State]:
        """ids (R,) -> (logits (R, V), new state). Pure: the given state is not modified.

        One row computes each layer whole. Several rows compute each layer in two halves of its
        units, which `run` may do on two threads (chargen.cores): the products are then the same
        ones however many threads run them, so the result never depends on the thread count.
        (Done whole, a product for 8 or more rows is blocked differently by OpenBLAS than in halves,
        and differs in the last bits.)
        """
        if len(ids) == 1:
            layers = self._whole
        else:
            if self._halves is None:
                self._halves = self._parts(halves=True)
            layers = self._halves
        new_state: State = []
        x = None
        for i, ((h, c), parts) in enumerate(zip(state, layers)):
            xh = h if i == 0 else np.concatenate([x, h], axis=1)
            out = run(_cell, [(xh, ids if i == 0 else None, c, part) for part in parts])
            if len(out) == 1:
                h, c = out[0]
            else:
                h, c = np.concatenate([o[0] for o in out], axis=1), np.concatenate([o[1] for o in out], axis=1)
            new_state.append((h, c))
            x = h
        return self.logits(x), new_state

    def logits(self, top_h: np.ndarray) -> np.ndarray:
        """The next-token logits (R, V) from the top layer's h (R, units): all a state needs to predict."""
        return top_h @ self.dense_kernel + self.dense_bias


def _cell(xh: np.ndarray, ids: np.ndarray | None, c: np.ndarray, part: Part) -> tuple[np.ndarray, np.ndarray]:
    """One LSTM layer for the units of `part`: (h, c) of those units from the layer's input [x, h]."""
    kernel, added, units = part
    z = xh @ kernel
    z += added if ids is None else added[ids]  # the first layer adds its table row per id
    u = z.shape[1] // 4
    gates = z[:, :3 * u]  # i, f, o: sigmoid(x) = (tanh(x / 2) + 1) / 2, in place
    gates *= 0.5
    np.tanh(gates, out=gates)
    gates += 1.0
    gates *= 0.5
    g = np.tanh(z[:, 3 * u:])
    c = gates[:, u:2 * u] * c[:, units]
    g *= gates[:, :u]
    c += g
    h = np.tanh(c)
    h *= gates[:, 2 * u:3 * u]
    return h, c


def pick(logits: np.ndarray, temperature: float, top_k: int, top_p: float, rng: np.random.Generator) -> np.ndarray:
    """One character id per row of logits (R, V): greedy at temperature 0, else sampled.

    The largest logit is subtracted before dividing by the temperature, so any positive
    temperature works: as it nears 0 the others' weights underflow to 0 and the pick becomes
    greedy (dividing first made 1e-320 overflow to Inf - Inf = NaN).
    """
    if temperature == 0:
        return np.argmax(logits, axis=-1)
    if temperature < _MAY_OVERFLOW:  # (l - max) / T can reach -Inf: the right weight (0), without the warning
        with np.errstate(over="ignore"):
            return _pick(logits, temperature, top_k, top_p, rng)
    return _pick(logits, temperature, top_k, top_p, rng)


def _pick(logits: np.ndarray, temperature: float, top_k: int, top_p: float, rng: np.random.Generator) -> np.ndarray:
    if top_k == 0 and top_p >= 1.0 and len(logits) == 1:  # one stream: 1-D calls cost less than 2-D ones
        z = logits[0].astype(np.float64)
        z -= z.max()
        z /= temperature
        cum = np.cumsum(np.exp(z, out=z))
        # searchsorted (left) counts the cum values below u: the same pick as the rows' path below
        return np.array([min(int(np.searchsorted(cum, rng.random() * cum[-1])), len(cum) - 1)])
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    z /= temperature
    if top_k == 0 and top_p >= 1.0:  # the common case, in as few numpy calls as possible (it runs per character)
        cum = np.cumsum(np.exp(z, out=z), axis=-1)
        u = rng.random((cum.shape[0], 1)) * cum[:, -1:]
        return np.minimum((cum < u).sum(axis=-1), cum.shape[-1] - 1)
    if 0 < top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)  # the largest (0) is kept
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
