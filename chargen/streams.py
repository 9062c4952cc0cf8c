"""Laying a book out for a stateful LSTM.

A stateful layer carries the final (h, c) of row i in batch k into row i of batch k+1. So the
text must be cut into `batch_size` contiguous streams (equal slices, one per row), and batch k
is columns [k*T, (k+1)*T) of every stream: row i of batch k+1 then continues exactly where
row i of batch k stopped. Shuffling such batches would break every row's continuity.

Batches are views into one (B, n) array: no per-window copies are ever made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chargen.errors import CorpusError


def split(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The head for training and a contiguous tail for validation (like nanoGPT's 90/10)."""
    n_val = int(len(ids) * val_fraction)
    return ids[: len(ids) - n_val], ids[len(ids) - n_val:]


def min_chars(batch_size: int, seq_len: int) -> int:
    """The fewest tokens that make one batch: every stream needs T inputs and 1 more target."""
    return batch_size * (seq_len + 1)


@dataclass(frozen=True)
class Streams:
    """`batch_size` contiguous streams of `ids`, served as (x, y) batches of shape (B, T)."""

    data: np.ndarray  # (B, n): row i is stream i
    seq_len: int

    @classmethod
    def from_ids(cls, ids: np.ndarray, batch_size: int, seq_len: int, what: str = "text",
                 unit: str = "characters") -> "Streams":
        """`unit` names what an id is in error messages: characters, or tokens with a BPE vocabulary."""
        need = min_chars(batch_size, seq_len)
        if len(ids) < need:
            raise CorpusError(
                f"the {what} has {len(ids):,} {unit} but one batch needs at least {need:,} "
                f"(batch size {batch_size} x (seq len {seq_len} + 1)); "
                "lower --batch-size or --seq-len" + (" or --val-fraction" if what != "text" else "")
                + ", or use a longer text")
        per_stream = len(ids) // batch_size
        # A reshape of a contiguous slice is a view: the book is not copied.
        return cls(ids[: batch_size * per_stream].reshape(batch_size, per_stream), seq_len)

    @property
    def batch_size(self) -> int:
        return self.data.shape[0]

    @property
    def num_batches(self) -> int:
        # The targets are the inputs shifted by one, so the last usable input column is n - 2.
        return (self.data.shape[1] - 1) // self.seq_len

    @property
    def chars_per_epoch(self) -> int:
        return self.num_batches * self.batch_size * self.seq_len

    def batch(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch k: x = columns [kT, (k+1)T) of every stream, y = x shifted by one character."""
        if not 0 <= k < self.num_batches:
            raise IndexError(f"batch {k} out of range 0..{self.num_batches - 1}")
        t = self.seq_len
        x = self.data[:, k * t:(k + 1) * t]
        y = self.data[:, k * t + 1:(k + 1) * t + 1]
        return x, y

    def __iter__(self):
        for k in range(self.num_batches):
            yield self.batch(k)

    def __len__(self) -> int:
        return self.num_batches
