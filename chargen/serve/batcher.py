"""Continuous batching: every client's row stepped together, one character per step, in one thread.

A recurrent model's whole context is its state (the LSTM's (h, c), the GRU's h), so any number of
generations can be the rows of one batch, joining and leaving between any two steps. Each step: pick a character for every row
(each row with its own options and its own random number generator), feed them all through the
engine, hand each row its piece, and take out the rows that are done.

Reproducibility. A row's arithmetic must not depend on which other rows are stepped beside it.
So rows are stepped in blocks of exactly `block_rows` (the last one padded): every product has
the same shape whatever the traffic, and no operation mixes rows, so a row gives the same bits
in any block and at any position in it (tests/test_serve_engine.py checks both). Rows are kept
dense (a leaving row's place is taken by the last row), so 33 clients step 3 blocks of 16, not
more. Picking is per row too: rows with the same options are picked in one `sampling.pick` call,
each drawing its number from its own generator (RowRandoms), exactly as `chargen sample` does.

The engine is any object with step(ids (R,), state) -> (logits (R, V), state), pure (the given
state is not modified), and zero_state(rows): chargen.cores.Stepper over the numpy engine
(chargen.net.numpy_engine) by default.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
import traceback
from typing import Callable

import numpy as np

from chargen.config import SampleConfig
from chargen.sampling import pick
from chargen.serve.jobs import Job
from chargen.serve.sessions import Session, Sessions

IDLE_WAIT_S = 0.5  # with nothing to step, look for news at least this often


class RowRandoms:
    """What `sampling.pick` draws from, for rows that each own a generator: row i's number comes from rngs[i]."""

    def __init__(self, rngs: list[np.random.Generator]):
        self.rngs = rngs

    def random(self, size: tuple[int, int] | None = None):
        if size is None:  # pick's one-row path draws a single float
            (rng,) = self.rngs
            return rng.random()
        assert size == (len(self.rngs), 1), size
        return np.array([[rng.random()] for rng in self.rngs])


class Batcher:
    """Steps the rows of all active jobs together in its own thread; `submit` a primed job to add a row."""

    def __init__(self, engine, tokenizer, capacity: int, block_rows: int,
                 sessions: Sessions, notify: Callable[[list[Job]], None], flush_s: float = 0.02):
        self.engine, self.sessions, self.notify, self.flush_s = engine, sessions, notify, flush_s
        self.tokens = list(tokenizer.tokens)
        self.block_rows = block_rows
        rows = -(-capacity // block_rows) * block_rows  # whole blocks
        self.state = [list(layer) for layer in engine.zero_state(rows)]  # per layer its state tensors, every row
        self.logits = np.zeros((rows, tokenizer.vocab_size), np.float32)
        self.jobs: list[Job] = []  # row i steps jobs[i]; rows past len(jobs) are padding
        self.ready: collections.deque[Job] = collections.deque()
        self.steps = self.characters = 0
        self._pending: dict[Job, None] = {}  # jobs with news not yet told, in order
        self._urgent: list[Job] = []  # jobs to tell at once: a first character, or the end
        self._last_flush = 0.0
        self._wake = threading.Event()
        self._closing = self._stopping = False
        self._thread = threading.Thread(target=self._run, name="chargen-batcher", daemon=True)

    # ------------------------------------------------------------ control (any thread)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Add a primed job (its state, logits and rng set): it gets a row before the next step."""
        self.ready.append(job)
        self._wake.set()

    def close(self) -> None:
        """End every generation (finish_reason "shutdown"), now and from now on."""
        self._closing = True
        self._wake.set()

    def stop(self) -> None:
        """close(), and let the thread end once nothing is left (call it when nothing more will be submitted)."""
        self._closing = self._stopping = True
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def stats(self) -> dict[str, int]:
        return {"active_rows": len(self.jobs), "blocks": -(-len(self.jobs) // self.block_rows),
                "block_rows": self.block_rows, "waiting_for_row": len(self.ready), "steps": self.steps,
                "characters": self.characters}

    # ------------------------------------------------------------ the stepping thread

    def run_step(self) -> bool:
        """Admit waiting jobs and step every row once (the thread's loop; tests call it directly). False: no rows."""
        self._admit()
        if not self.jobs:
            return False
        self._step()
        return True

    def _run(self) -> None:
        try:
            while True:
                if not self.run_step():
                    self._flush(force=True)
                    if self._stopping and not self.ready:
                        return
                    self._wake.wait(IDLE_WAIT_S)
                    self._wake.clear()
        except BaseException:  # a bug: end every generation so no client waits forever, and say what happened
            traceback.print_exc(file=sys.stderr)
            for job in self.jobs + list(self.ready):
                self._finish(job, "error", save=False)
            self.jobs.clear()
            self._flush(force=True)
            raise

    def _admit(self) -> None:
        """Drop rows whose client left (or all, when closing); give waiting jobs a row."""
        gone = [i for i, job in enumerate(self.jobs) if job.cancelled or self._closing]
        for i in reversed(gone):
            job = self._remove(i)
            self._finish(job, "shutdown" if self._closing and not job.cancelled else "cancelled", save=False)
        while self.ready and len(self.jobs) < len(self.logits):
            job = self.ready.popleft()
            if job.cancelled or self._closing:
                self._finish(job, "cancelled" if job.cancelled else "shutdown", save=False)
            elif job.request.sample.length == 0:  # nothing to generate: the primed state is the end
                self._finish(job, "length", session=(job.state, job.logits))
            else:
                i = len(self.jobs)
                self.jobs.append(job)
                for arrays, given in zip(self.state, job.state):
                    for array, value in zip(arrays, given):
                        array[i] = value[0]
                self.logits[i] = job.logits

    def _step(self) -> None:
        n, size = len(self.jobs), self.block_rows
        blocks = -(-n // size)
        ids = np.zeros(blocks * size, np.int64)  # padding rows read id 0; their results are never used
        groups: dict[SampleConfig, list[int]] = {}
        for i, job in enumerate(self.jobs):
            groups.setdefault(job.options, []).append(i)
        for options, rows in groups.items():
            ids[rows] = pick(self.logits[rows], options, RowRandoms([self.jobs[i].rng for i in rows]))
        for b in range(blocks):
            rows = slice(b * size, (b + 1) * size)
            logits, state = self.engine.step(ids[rows], [tuple(a[rows] for a in arrays) for arrays in self.state])
            self.logits[rows] = logits
            for arrays, new in zip(self.state, state):
                for array, value in zip(arrays, new):
                    array[rows] = value
        self.steps += 1
        done = []
        for i, (job, idx) in enumerate(zip(self.jobs, ids[:n].tolist())):
            piece = self.tokens[idx]
            job.pieces.append(piece)
            job.chars += len(piece)
            self.characters += len(piece)
            hit = job.stops.hit(piece)
            if hit is not None or job.chars >= job.request.sample.length:
                job.stopped_by = hit
                done.append(i)
            elif len(job.pieces) == 1:
                self._urgent.append(job)  # the first character goes out at once
            else:
                self._pending[job] = None
        for i in reversed(done):
            session = ([tuple(a[i:i + 1].copy() for a in arrays) for arrays in self.state], self.logits[i].copy())
            job = self._remove(i)
            self._finish(job, "stop" if job.stopped_by is not None else "length", session=session)
        self._flush()

    def _remove(self, i: int) -> Job:
        """Take row i out, moving the last row into its place (rows stay dense: fewest blocks)."""
        job, last = self.jobs[i], len(self.jobs) - 1
        if i != last:
            for arrays in self.state:
                for array in arrays:
                    array[i] = array[last]
            self.logits[i] = self.logits[last]
            self.jobs[i] = self.jobs[last]
        self.jobs.pop()
        return job

    def _finish(self, job: Job, reason: str, save: bool = True, session=None) -> None:
        if save and job.request.keep and session is not None:
            state, logits = session
            job.session_id = self.sessions.save(Session(state, logits, job.rng.bit_generator.state))
        job.finish_reason = reason
        self._pending.pop(job, None)
        self._urgent.append(job)

    def _flush(self, force: bool = False) -> None:
        """Tell the handlers of jobs with news, at most every flush_s (coalescing pieces into fewer events)."""
        if self._urgent:
            self.notify(self._urgent)
            self._urgent = []
        now = time.perf_counter()
        if self._pending and (force or now - self._last_flush >= self.flush_s):
            self.notify(list(self._pending))
            self._pending.clear()
            self._last_flush = now
