"""Which cores the per-character step runs on: one, or two when two are ours and it is faster now.

- One row (one stream) is a few matrix-vector products that read every weight once per step.
  OpenBLAS's own two threads split them by output columns; our own threads cannot do that
  split well (a hand-over per layer costs what the second core gains).
- Several rows (samples) are compute-bound products; the step cuts each layer into two halves
  of its units (see `NumpyEngine.step`) and runs them on two threads with one BLAS thread each,
  the gate arithmetic split too.
(The measurements behind both: docs/benchmarks.md, "How generation uses the two cores".)

Why not just leave OpenBLAS on two threads: its workers spin while they wait, and when another
process keeps the other core busy a one-row step on two threads is slower than on one, with
stalls of 10 ms and more (docs/benchmarks.md). So each Stepper times its steps and, every PERIOD
steps, tries the other choice for TRIAL steps, keeping whichever was faster on average: a busy
machine falls back to one core within a couple of thousand steps, a quiet one stays on two.

Either choice gives the same bits, so switching never changes the text a seed gives: halves run
in turn or side by side are the same products, and for one row two OpenBLAS threads split the
output columns, not the sums; the Stepper checks that on its first one-row step and stays on
one core for one row if the two ever differ.

Both ways to use two cores need numpy's BLAS threads set per step (`chargen.blas`): two for one
row, one for each half. Where they cannot be set (no OpenBLAS found: Apple Accelerate, MKL), the
Stepper stays on one core, our side: two threads of ours, each calling a BLAS that may start
threads of its own, would fight over two cores. The text is the same either way (tested).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Callable

import numpy as np

from chargen.blas import BlasThreads, blas_threads
from chargen.net.layout import State
from chargen.net.numpy_engine import run_in_turn

# Every PERIOD steps the other choice runs for TRIAL steps. The first SETTLE steps after a change are
# not timed: after two-thread steps, OpenBLAS's idle worker keeps spinning for ~60 steps and slows
# the one-thread steps beside it (measured with the other core busy: 750 µs a step over steps 8-64
# after the change, 396 µs afterwards). Trials cost ~3% when two cores are faster.
PERIOD, TRIAL, SETTLE = 2048, 128, 64


def step_threads() -> int:
    """Cores for the per-character step: 2 where two cores are ours, else 1 (CHARGEN_THREADS=1 or 2 overrides)."""
    wanted = os.environ.get("CHARGEN_THREADS", "").strip()
    if wanted in ("1", "2"):
        return int(wanted)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 2 if cores >= 2 else 1


class Chooser:
    """One core or two for the next step, from recent mean step times; tries the other choice every period."""

    def __init__(self, two_possible: bool, adapt: bool = True):
        self.two_possible = two_possible
        self.use_two = two_possible
        self.adapt = adapt  # False: never try one core (benchmarks/sample_speed.py --busy compares)
        self.steps = PERIOD - TRIAL - 2 * SETTLE  # the first decision comes after 2 x (SETTLE + TRIAL) steps
        self._last: bool | None = None
        self._since_change = 0
        self._total = {False: 0.0, True: 0.0}
        self._count = {False: 0, True: 0}
        self.score: dict[bool, float | None] = {False: None, True: None}  # mean step time, halved in weight each period
        self._period = 0
        self._wait = 1  # periods from one trial to the next: doubles (to 16) while the other choice loses clearly

    def next(self) -> bool:
        """True: run the next step on two cores."""
        if not self.two_possible:
            return False
        trying = self.adapt and self._period % self._wait == 0 and self.steps % PERIOD >= PERIOD - TRIAL
        return self.use_two != trying

    def took(self, two: bool, seconds: float) -> None:
        self._since_change = self._since_change + 1 if two == self._last else 1
        self._last = two
        if self._since_change > SETTLE:
            self._total[two] += seconds
            self._count[two] += 1
        self.steps += 1
        if self.steps % PERIOD == 0:
            # Two threads on a busy machine are mostly fast with rare long stalls, so one lucky trial
            # must not win back the choice at once: each period's mean only halves the old score.
            means = {choice: self._total[choice] / count for choice, count in self._count.items() if count}
            for choice, mean in means.items():
                old = self.score[choice]
                self.score[choice] = mean if old is None else (old + mean) / 2
            if len(means) == 2:  # a trial ran: on a busy machine each one costs, so space them out while they lose
                self._wait = min(2 * self._wait, 16) if means[not self.use_two] > 1.5 * means[self.use_two] else 1
            if self.two_possible and None not in self.score.values():
                self.use_two = self.score[True] <= self.score[False]
            self._total, self._count = {False: 0.0, True: 0.0}, {False: 0, True: 0}
            self._period += 1


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


class Stepper:
    """`engine.step` (a chargen.net.numpy_engine.NumpyEngine) on the cores that are fastest at the moment
    (`cores` = 1 keeps it on one)."""

    def __init__(self, engine, cores: int | None = None, blas: BlasThreads | None = None, adapt: bool = True):
        self.engine = engine
        self.blas = blas if blas is not None else blas_threads()
        two = (cores or step_threads()) >= 2 and self.blas is not None  # without BLAS control: one core
        self.one_row = Chooser(two, adapt)  # two cores for one row: two BLAS threads
        self._one_row_checked = not self.one_row.two_possible
        self.many_rows = Chooser(two, adapt)  # two cores for several rows: halves on our threads, one BLAS thread each
        self._helper: _Helper | None = None

    def logits(self, top_h: np.ndarray) -> np.ndarray:
        """The next-token logits from the top layer's h, as this engine's steps compute them."""
        return self.engine.logits(top_h)

    def zero_state(self, rows: int = 1) -> State:
        return self.engine.zero_state(rows)

    def step(self, ids: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """ids (R,) -> (logits (R, V), new state). Pure: the given state is not modified."""
        if len(ids) == 1:
            if not self._one_row_checked:
                return self._check_one_row(ids, state)
            chooser = self.one_row
            two = chooser.next()
            threads, run = (2 if two else 1), run_in_turn  # two cores for one row: OpenBLAS's own threads
        else:
            chooser = self.many_rows
            two = chooser.next()
            threads, run = 1, (self._side_by_side if two else run_in_turn)  # halves on our two threads
        start = time.perf_counter()
        before = self._blas(threads)
        try:
            result = self.engine.step(ids, state, run)
        finally:
            self._blas(before)
        chooser.took(two, time.perf_counter() - start)
        return result

    def _check_one_row(self, ids: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """The first one-row step, on one BLAS thread and on two: two is allowed only if the bits agree."""
        self._one_row_checked = True
        before = self._blas(1)
        try:
            one = self.engine.step(ids, state)
            self._blas(2)
            two = self.engine.step(ids, state)
        finally:
            self._blas(before)
        same = np.array_equal(one[0], two[0]) and all(
            np.array_equal(a, b) for sa, sb in zip(one[1], two[1]) for a, b in zip(sa, sb))
        self.one_row.two_possible = self.one_row.use_two = same
        return one

    def _blas(self, threads: int) -> int:
        """Set numpy's BLAS threads; returns the previous count (0: no control)."""
        if self.blas is None or threads == 0:
            return 0
        before = self.blas.get()
        if before != threads:
            self.blas.set(threads)
        return before

    def _side_by_side(self, fn, jobs: list[tuple]) -> list:
        """Run a layer's parts: the first here, the second on the helper thread."""
        if len(jobs) != 2:
            return run_in_turn(fn, jobs)
        out: list = [None, None]

        def part(k: int) -> Callable[[], None]:
            def run() -> None:
                out[k] = fn(*jobs[k])
            return run

        if self._helper is None:
            self._helper = _Helper()
            weakref.finalize(self, self._helper.stop)  # the thread ends with the stepper
        self._helper.both(part(0), part(1))
        return out
