"""progress.json: where a snapshot stands in its run (epoch, step, best loss, the book's fingerprint).

Everything the training loop restores from it is checked here first, so a damaged file is a
CheckpointError naming the key, never a resume that goes wrong later.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from chargen.errors import CheckpointError


def check_progress(progress: Any, where: Path) -> None:
    problem = _progress_problem(progress)
    if problem:
        raise CheckpointError(f"{where}: corrupted ({problem}); use another snapshot or retrain")


def _progress_problem(p: Any) -> str | None:
    """What is wrong with a progress.json document, or None. Everything the loop restores is checked."""
    if not isinstance(p, dict):
        return f"expected a JSON object, got {type(p).__name__}"
    for key in ("epoch", "step"):
        if not _count(p.get(key)):
            return f"'{key}' is {p.get(key)!r}, expected a non-negative integer"
    batches = p.get("num_batches")
    if batches is not None and not (_count(batches) and batches > 0):
        return f"'num_batches' is {batches!r}, expected a positive integer"
    if batches is not None and p["step"] > batches:
        return f"'step' {p['step']} is past the end of an epoch of {batches} steps"
    if p.get("best_loss") is not None and not _non_negative(p["best_loss"]):
        return f"'best_loss' is {p['best_loss']!r}, expected a finite number or null"
    seconds = p.get("seconds", 0.0)  # training seconds used (a time budget counts them)
    if not _non_negative(seconds):
        return f"'seconds' is {seconds!r}, expected a finite number >= 0"
    book = p.get("book")  # absent in snapshots written before it was kept
    if book is not None and not (isinstance(book, dict) and _count(book.get("tokens"))
                                 and isinstance(book.get("sha256"), str)):
        return f"'book' is {book!r}, expected a token count and a hash"
    partial = p.get("partial")
    if partial is None:
        return None
    if not isinstance(partial, dict):
        return f"'partial' is {partial!r}, expected an object with loss_sum, steps and seconds"
    for key in ("loss_sum", "seconds"):
        if not _non_negative(partial.get(key)):
            return f"'partial' {key} is {partial.get(key)!r}, expected a finite number >= 0"
    if not _count(partial.get("steps")) or partial["steps"] > p["step"]:
        return f"'partial' steps is {partial.get('steps')!r}, expected an integer from 0 to 'step' ({p['step']})"
    return None


def _count(x: Any) -> bool:
    return type(x) is int and x >= 0


def _non_negative(x: Any) -> bool:
    return type(x) in (int, float) and math.isfinite(x) and x >= 0
