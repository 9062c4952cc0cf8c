"""The numpy LSTM step on two cores: each thread owns half of every layer's units.

Why this split: a layer's new (h, c) for unit j depends only on column j of each gate's
weights, so if the gate columns are regrouped as [i, f, g, o of units 0..U/2) | the same for
U/2..U), each half of a layer is a complete, independent computation (matmul, gates, cell)
that writes its own half of h and c. The threads meet once per layer (the next layer needs
all of h), not once per matrix product. Both halves read half of the weights, so at batch 1
(bandwidth-bound) and at many rows (compute-bound) the step runs on both cores.

Why not OpenBLAS threads: its worker threads spin while waiting, and when another process
keeps a core busy a batch-1 step collapsed from ~2,300 to ~80 characters per second. These
threads block on an Event instead, so a busy machine only costs the hand-over.

Per unit the arithmetic is the serial step's, but BLAS may block the half-width matrices
differently, so results can differ from one thread's in the last bits (~1e-7, tested). The
thread count is fixed per machine (chargen.sampling.step_threads), so a seed still gives the
same text there.
"""

from __future__ import annotations

import threading
import weakref
from typing import Callable

import numpy as np

State = list[tuple[np.ndarray, np.ndarray]]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def _gate_columns(w: np.ndarray, units: int, part: slice) -> np.ndarray:
    """Columns of the i, f, g, o blocks that belong to the units in `part`, gate by gate."""
    return np.ascontiguousarray(np.concatenate(
        [w[..., k * units + part.start: k * units + part.stop] for k in range(4)], axis=-1), dtype=np.float32)


class _Helper:
    """One worker thread that runs a given function when asked; the caller waits on an Event."""

    def __init__(self) -> None:
        self._go, self._done = threading.Event(), threading.Event()
        self._task: Callable[[], None] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="chargen-step", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            self._go.wait()
            self._go.clear()
            task = self._task
            if task is None:  # stop
                return
            try:
                task()
            except BaseException as e:  # handed to the caller, never lost in the thread
                self._error = e
            self._done.set()

    def both(self, mine: Callable[[], None], theirs: Callable[[], None]) -> None:
        """Run `theirs` on the worker and `mine` here; return when both are done."""
        self._task, self._error = theirs, None
        self._done.clear()
        self._go.set()
        try:
            mine()
        finally:
            self._done.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._task = None
        self._go.set()


class TwoThreadLSTM:
    """Same step as `NumpyLSTM.step` (same arguments and results), split over two threads."""

    def __init__(self, first_table: np.ndarray, first_rec: np.ndarray, stacked: list, dense_kernel: np.ndarray,
                 dense_bias: np.ndarray):
        self.units = [first_rec.shape[0]] + [k.shape[1] // 4 for k, _ in stacked]
        self.parts = [(slice(0, u // 2), slice(u // 2, u)) for u in self.units]
        u0 = self.units[0]
        # per layer, per half: (input table or None, stacked or recurrent kernel, bias or None)
        self.halves = [[(_gate_columns(first_table, u0, p), _gate_columns(first_rec, u0, p), None)
                        for p in self.parts[0]]]
        for (kernel, bias), u, parts in zip(stacked, self.units[1:], self.parts[1:]):
            self.halves.append([(None, _gate_columns(kernel, u, p), _gate_columns(bias, u, p)) for p in parts])
        self.dense_kernel, self.dense_bias = dense_kernel, dense_bias
        self._helper = _Helper()
        weakref.finalize(self, self._helper.stop)  # the thread ends with the stepper

    def step(self, ids: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """ids (R,) -> (logits (R, V), new state). Pure: the given state is not modified."""
        new_state: State = []
        x = None
        for layer, (h, c) in enumerate(state):
            rows = h.shape[0]
            h_new = np.empty((rows, self.units[layer]), np.float32)
            c_new = np.empty_like(h_new)
            inp = h if layer == 0 else np.concatenate([x, h], axis=1)
            jobs = [self._half(layer, k, ids, inp, c, h_new, c_new) for k in range(2)]
            self._helper.both(jobs[0], jobs[1])
            new_state.append((h_new, c_new))
            x = h_new
        return x @ self.dense_kernel + self.dense_bias, new_state

    def _half(self, layer: int, k: int, ids, inp, c, h_out, c_out) -> Callable[[], None]:
        table, kernel, bias = self.halves[layer][k]
        part = self.parts[layer][k]
        n = part.stop - part.start

        def run() -> None:
            z = inp @ kernel
            z += table[ids] if table is not None else bias
            i_g, f_g = _sigmoid(z[:, :n]), _sigmoid(z[:, n:2 * n])
            g, o_g = np.tanh(z[:, 2 * n:3 * n]), _sigmoid(z[:, 3 * n:])
            cell = f_g * c[:, part] + i_g * g
            c_out[:, part] = cell
            h_out[:, part] = o_g * np.tanh(cell)
        return run
