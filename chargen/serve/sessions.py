"""Saved sessions: where a generated text stopped, so that a later request can go on from there.

A session is a snapshot, never changed once saved: the row's state after the last character of
the text was read, the logits over the character after it, and the position of its random
number generator. Continuing from one saves the new end under a NEW id, so two requests that
continue the same id are two branches of the same text, and neither can disturb the other.
The store is a least-recently-used dict bounded by --max-sessions; it is touched from the
event loop (lookups) and the stepping thread (saves), hence the lock.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

State = list[tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class Session:
    state: State  # per layer its state tensors ((h, c) or (h,)), each (1, units)
    logits: np.ndarray  # (V,): the distribution of the next character, before temperature
    rng: dict[str, Any]  # numpy bit generator state (bit_generator.state)

    def new_rng(self) -> np.random.Generator:
        """A generator at the saved position (a fresh one each time: branches draw the same numbers)."""
        rng = np.random.default_rng()
        rng.bit_generator.state = self.rng
        return rng


class Sessions:
    """id -> Session, at most `capacity` of them; the least recently used goes first."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def save(self, session: Session) -> str:
        sid = secrets.token_hex(16)
        with self._lock:
            self._items[sid] = session
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return sid

    def get(self, sid: str) -> Session | None:
        with self._lock:
            session = self._items.get(sid)
            if session is not None:
                self._items.move_to_end(sid)
            return session

    def __len__(self) -> int:
        return len(self._items)
