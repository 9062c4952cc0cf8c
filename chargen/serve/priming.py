"""Priming new requests: reading each seed into a state, in its own thread, beside the stepping.

A seed is read one token at a time by the numpy engine on one row (the whole-layer products
`chargen sample` steps with). Not by the Generator's batch-1 Keras model, which reads a seed in
one call but runs its loop eagerly: ~18 ms a character measured here (busy machine, tiny
model), against ~0.1-0.4 ms for a numpy step. It runs in this thread, not between steps: numpy
releases the GIL in its products, so the batcher keeps stepping the other rows meanwhile (the
two share the cores). Seeds are read CHUNK tokens at a turn, round-robin, so a long seed cannot
hold back the first character of the short ones queued behind it.
"""

from __future__ import annotations

import collections
import sys
import threading
import traceback

import numpy as np

from chargen.serve.batcher import Batcher
from chargen.serve.jobs import Job
from chargen.tokenizer import start_token

CHUNK = 64  # seed tokens primed per turn (~6-25 ms at 2x512)


class Primer:
    """Primes submitted jobs with `stepper` (one row; only this thread uses it), then hands them to the batcher."""

    def __init__(self, stepper, tokenizer, batcher: Batcher):
        self.stepper, self.tokenizer, self.batcher = stepper, tokenizer, batcher
        self._queue: collections.deque[tuple[Job, int]] = collections.deque()  # (job, seed tokens read)
        self._wake = threading.Event()
        self._closing = False
        self._blank: tuple | None = None  # (state, logits) after reading a newline from zero state: the same for all
        self._thread = threading.Thread(target=self._run, name="chargen-primer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Jobs queued for (more) priming."""
        return len(self._queue)

    def submit(self, job: Job) -> None:
        self._queue.append((job, 0))
        self._wake.set()

    def close(self) -> None:
        self._closing = True
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def prime(self, job: Job) -> Job:
        """Prime `job` now, on this thread, chunk after chunk (what the thread does in turns); returns it."""
        done = 0
        while not self._prime(job, done):
            done += CHUNK
        return job

    def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.wait()
                self._wake.clear()
                continue
            job, done = self._queue.popleft()
            cut = job.cancelled or self._closing  # the batcher then finishes it with the right reason
            try:
                finished = cut or self._prime(job, done)
            except Exception:  # a bug: log it, end this job, keep serving the others
                traceback.print_exc(file=sys.stderr)
                job.finish_reason = "error"
                self.batcher.notify([job])
                continue
            if finished:
                self.batcher.submit(job)
            else:
                self._queue.append((job, done + CHUNK))

    def _prime(self, job: Job, done: int) -> bool:
        """Read the seed's tokens [done, done + CHUNK) into job.state and job.logits. True when it is all read."""
        if done == 0:
            job.seed_ids = self.tokenizer.encode(job.request.seed).astype(np.int64)  # checked when the request was
            if job.start is not None:
                job.state, job.logits = job.start
            elif len(job.seed_ids) == 0:  # no seed: a newline read from zero state, as the Generator does
                if self._blank is None:  # the same for every such request: read once (the arrays are only read)
                    logits, state = self.stepper.step(np.array([start_token(self.tokenizer)], np.int64),
                                                      self.stepper.zero_state(1))
                    self._blank = (state, logits[0])
                job.state, job.logits = self._blank
            else:
                job.state, job.logits = self.stepper.zero_state(1), None
        ids, state, logits = job.seed_ids[done:done + CHUNK], job.state, None
        for k in range(len(ids)):
            logits, state = self.stepper.step(ids[k:k + 1], state)
        if logits is not None:
            job.state, job.logits = state, logits[0]
        return done + CHUNK >= len(job.seed_ids)
