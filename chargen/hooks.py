"""What train() returns and what its callbacks see: TrainResult, EpochEnd, StepEnd.

Callbacks get copies and plain values, never the training model, so they cannot disturb its
LSTM state; a step-end callback can only ask the loop to stop (saved, as on Ctrl-C).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from chargen.config import ModelConfig, TrainConfig


@dataclass
class TrainResult:
    """The run folder, its per-epoch history and the best score (validation loss, or training loss without validation)."""

    run_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_loss: float | None = None


@dataclass(frozen=True)
class EpochEnd:
    """What an epoch-end callback sees, after the epoch's snapshot was saved.

    `weights()` returns copies of the current weights (for a batch-1 Generator, say); callbacks
    get no handle on the training model, so they cannot disturb its state.
    """

    epoch: int
    record: dict[str, Any]
    run_dir: Path
    model_config: ModelConfig
    train_config: TrainConfig
    tokenizer: Any
    weights: Callable[[], list[np.ndarray]]
    improved: bool


@dataclass(frozen=True)
class StepEnd:
    """What a step-end callback (an object with `on_step_end`) sees after each training step.

    `epoch` counts the epochs finished before this one (0 in the first), `step` the steps done in
    this epoch, this one included (1..num_batches). `stop()` asks the loop to stop after this
    step, exactly as a Ctrl-C does: it saves a resumable snapshot and raises TrainingInterrupted.
    """

    epoch: int
    step: int
    num_batches: int
    loss: float
    stop: Callable[[], None]


def split_callbacks(callbacks: Sequence[Any]) -> tuple[list[Callable[[StepEnd], None]], list[Callable[[EpochEnd], None]]]:
    """(step-end, epoch-end) functions from `callbacks`: a plain callable is an epoch-end callback;
    an object may instead define `on_step_end(StepEnd)` and/or `on_epoch_end(EpochEnd)`."""
    steps, epochs = [], []
    for cb in callbacks:
        hooks = [getattr(cb, name, None) for name in ("on_step_end", "on_epoch_end")]
        if hooks == [None, None]:
            if not callable(cb):
                raise TypeError(f"callbacks: {cb!r} is neither callable nor has on_step_end/on_epoch_end")
            epochs.append(cb)
        else:
            steps += [hooks[0]] if hooks[0] else []
            epochs += [hooks[1]] if hooks[1] else []
    return steps, epochs
