"""Many rows on two cores: each thread steps half of the rows (samples) with the whole model.

Why rows and not units: rows are independent all the way through (each sample has its own
state), so a half is a complete step with one hand-over per step. Measured here at 2x512 and
16 rows: 8,049 vs 6,317 characters/s in total (+27%); less than 2x because OpenBLAS is less
efficient at 8 rows than at 16 (42 vs 57 GFLOP/s on one core). At batch 1 there is nothing to
split that helps: a step streams ~12 MB of weights (2x512) and
the two cores share the cache/memory bandwidth, so two threads each reading half the weights
measured no faster (0.97x) than one. One row therefore always runs on the caller's thread.

Why not OpenBLAS threads: its worker threads spin while waiting, and when another process
keeps a core busy a batch-1 step collapsed from ~2,300 to ~80 characters per second. This
helper blocks on an Event instead, so a busy machine only costs the hand-over.

Halving the rows changes how BLAS blocks the products, so results can differ from one thread's
in the last bits (~1e-7): a seed gives the same text for a given thread setting
(CHARGEN_THREADS=1 or 2), which is fixed per machine.
"""

from __future__ import annotations

import threading
import weakref
from typing import Callable

import numpy as np

State = list[tuple[np.ndarray, np.ndarray]]


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


class RowHalves:
    """`lstm.step` for R rows, as two steps of about R/2 rows each on two threads (one row: no split)."""

    def __init__(self, lstm):
        self.lstm = lstm
        self._helper: _Helper | None = None

    def step(self, ids: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """ids (R,) -> (logits (R, V), new state). Pure: the given state is not modified."""
        rows = len(ids)
        if rows < 2:
            return self.lstm.step(ids, state)
        cut = (rows + 1) // 2
        halves = [slice(0, cut), slice(cut, rows)]
        results: list = [None, None]

        def run(k: int) -> Callable[[], None]:
            def job() -> None:
                part = halves[k]
                results[k] = self.lstm.step(ids[part], [(h[part], c[part]) for h, c in state])
            return job

        if self._helper is None:
            self._helper = _Helper()
            weakref.finalize(self, self._helper.stop)  # the thread ends with the stepper
        self._helper.both(run(0), run(1))
        (l0, s0), (l1, s1) = results
        new_state = [(np.concatenate([h0, h1]), np.concatenate([c0, c1])) for (h0, c0), (h1, c1) in zip(s0, s1)]
        return np.concatenate([l0, l1]), new_state
