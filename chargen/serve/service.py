"""The loaded model and the two threads that serve it (priming, stepping), as the HTTP app sees them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from chargen.config import ServeConfig
from chargen.cores import Stepper
from chargen.serve.batcher import Batcher
from chargen.serve.jobs import Job
from chargen.serve.priming import Primer
from chargen.serve.requests import GenerateRequest, RequestError
from chargen.serve.sessions import Sessions


class Service:
    """Starts a generation per request (`start`), tracks how many are in progress, and stops cleanly."""

    def __init__(self, generator, cfg: ServeConfig, info: dict[str, Any] | None = None, engine=None):
        self.cfg, self.generator = cfg, generator
        self.tokenizer = generator.tokenizer
        stepping, priming = engines(generator)
        self.engine = engine if engine is not None else stepping
        self.sessions = Sessions(cfg.max_sessions)
        self.batcher = Batcher(self.engine, self.tokenizer, cfg.max_concurrent, cfg.block_rows,
                               self.sessions, self._notify, cfg.flush_ms / 1000)
        self.primer = Primer(priming, self.tokenizer, self.batcher)
        self.info = info or {}
        self.in_progress = 0
        self.closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ lifetime

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.batcher.start()
        self.primer.start()

    def close(self) -> None:
        """Refuse new work and end every generation now (each stream gets its closing event); idempotent."""
        self.closing = True
        self.primer.close()
        self.batcher.close()

    def join(self, timeout: float = 10.0) -> None:
        """After close(): wait for both threads to end (the batcher last: it finishes what the primer hands it)."""
        self.primer.join(timeout)
        self.batcher.stop()
        self.batcher.join(timeout)

    # ------------------------------------------------------------ requests

    def begin(self, request: GenerateRequest) -> Job:
        """A Job for a checked request, queued for priming; RequestError if the server cannot take it now."""
        if self.closing:
            raise RequestError(503, None, "the server is shutting down; retry against another instance or later")
        if self.in_progress >= self.cfg.max_concurrent:
            raise RequestError(503, None, f"all {self.cfg.max_concurrent} generations (--max-concurrent) are in use; "
                                          "retry after the Retry-After seconds")
        session = None
        if request.session is not None:
            session = self.sessions.get(request.session)
            if session is None:
                raise RequestError(404, "session", f"session {request.session} is not on this server: never given, "
                                                   f"dropped as the least recently used of {self.cfg.max_sessions} "
                                                   "(--max-sessions), or the server restarted; start a new one with "
                                                   '"session": true')
        job = Job(request, asyncio.Event())
        seed = request.sample.rng_seed
        if session is not None:
            job.start = (session.state, session.logits)
        job.rng = session.new_rng() if session is not None and seed is None else np.random.default_rng(seed)
        self.in_progress += 1
        self.primer.submit(job)
        return job

    def end(self, job: Job) -> None:
        """The handler is done with `job` (answered, or its client left): its row is freed before the next step."""
        job.cancel()
        self.in_progress -= 1

    def _notify(self, jobs: list[Job]) -> None:
        """From the stepping or priming thread: wake the handlers of `jobs` on the event loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_wake, jobs)

    def model_info(self) -> dict[str, Any]:
        cfg = self.generator.config
        return {**self.info, "cell": cfg.cell, "layers": len(cfg.units), "units": list(cfg.units), "embed": cfg.embed,
                "vocab_size": cfg.vocab_size, "tokenizer": self.tokenizer.kind, "engine": type(self.engine).__name__,
                "precision": self.generator.precision,
                "limits": {"max_length": self.cfg.max_length, "max_concurrent": self.cfg.max_concurrent,
                           "max_body": self.cfg.max_body, "max_sessions": self.cfg.max_sessions},
                "stats": {**self.batcher.stats(), "in_progress": self.in_progress, "priming": self.primer.waiting,
                          "sessions": len(self.sessions)}}


def engines(generator) -> tuple[Any, Any]:
    """The generator's weights as two engines: one for the stepping thread (all cores), one for priming (one row).

    Each thread gets its own engine, since neither engine may be used by two threads at once. fp32: the numpy
    engine, in two halves on two cores where it pays; priming on one core, because OpenBLAS's thread count is
    process-wide and the stepping thread's products run with one BLAS thread each. int8: the LiteRT engine,
    and a second interpreter of the same model on one thread for priming.
    """
    if generator.precision == "int8":
        return generator.stepper, generator.stepper.copy(threads=1)
    numpy_engine = generator.stepper.engine
    return Stepper(numpy_engine), Stepper(numpy_engine, cores=1)


def _wake(jobs: list[Job]) -> None:
    for job in jobs:
        if job.event is not None:
            job.event.set()


def snapshot_info(source: Path | None, which: str) -> dict[str, Any]:
    """What GET /v1/model says about the checkpoint: run, snapshot, epoch and validation bits per character."""
    from chargen.checkpoint import run_of
    from chargen.curves import run_history

    if source is None:
        return {}
    history = run_history(source) if (source / "history.jsonl").exists() else []
    last = history[-1] if history else {}
    return {"name": run_of(source).name, "snapshot": source.name, "which": which, "epoch": last.get("epoch"),
            "val_bpc": last.get("val_bpc")}
