"""One request's generation as the server's threads share it.

The event loop (its HTTP handler) creates a Job and reads its pieces; the priming thread fills
in its starting state; the stepping thread (chargen.serve.batcher) appends pieces and finishes
it. Each field has one writer, and list appends and attribute writes are atomic in CPython, so
no lock is needed: the handler reads `pieces` up to the length it sees.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import numpy as np

from chargen.serve.requests import GenerateRequest
from chargen.stops import StopStrings

State = list[tuple[np.ndarray, ...]]  # per layer, its cell's state tensors
# Why a generation ended: its length reached, a stop string, the client went away, the server is stopping,
# or a bug (logged on the server's stderr).
FINISH_REASONS = ("length", "stop", "cancelled", "shutdown", "error")


class Job:
    def __init__(self, request: GenerateRequest, event: asyncio.Event | None = None):
        self.request = request
        # How this row picks (its SampleConfig without length and rng_seed): rows alike in it are picked together
        self.options = replace(request.sample, length=0, rng_seed=None)
        self.stops = StopStrings(request.stop)
        self.event = event  # set (through the loop) whenever there is news; None where nobody waits
        # the starting point: a saved session's, or zero; then the primed state, logits and generator
        self.start: tuple[State, np.ndarray] | None = None
        self.state: State | None = None
        self.logits: np.ndarray | None = None
        self.rng: np.random.Generator | None = None
        self.seed_ids: np.ndarray | None = None  # the seed as token ids, read in chunks by the primer
        # what the stepping thread writes
        self.pieces: list[str] = []
        self.chars = 0
        self.finish_reason: str | None = None
        self.stopped_by: str | None = None
        self.session_id: str | None = None
        self.cancelled = False  # written by the handler: the client left

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def cancel(self) -> None:
        self.cancelled = True

    def result(self) -> dict[str, Any]:
        """The closing fields of an answer (the text is sent separately when streaming)."""
        return {"finish_reason": self.finish_reason, "stop": self.stopped_by, "characters": self.chars,
                "session": self.session_id}
