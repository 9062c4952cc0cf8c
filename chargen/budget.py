"""How long a run trains, and the learning-rate curve planned over it: --epochs, --steps or --minutes.

A budget is a total for the whole run, counted from its start and across resumes: `--epochs 5
--resume` trains until 5 epochs are done, `--minutes 90 --resume` until 90 minutes of training
have been used, however many sessions that took. Resuming with the same budget continues the
same plan; a larger one extends it.

The cosine curve goes from --lr at the first step to --lr x --lr-final at the budget's end:
- a step budget (epochs x steps per epoch, or --steps) is a function of the optimizer's step
  count, which a resume restores: the same seed gives the same run bit for bit, resumed or not;
- a time budget's length in steps is not known in advance, so its curve is a function of the
  training seconds used over the budget's seconds (kept in progress.json, so a resume continues
  the same curve). How many steps fit, and so the run itself, depends on how fast the machine is
  at the time: a time budget is not bit-reproducible.
Changing the budget on resume re-plans: the rate moves to where the new curve is at the current
point (a longer budget raises it, a shorter one lowers it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

DEFAULT_EPOCHS = 10
KINDS = ("epochs", "steps", "minutes")


@dataclass(frozen=True)
class Budget:
    """One of --epochs, --steps or --minutes, for a book of `steps_per_epoch` steps."""

    kind: str  # one of KINDS
    amount: float
    steps_per_epoch: int

    @classmethod
    def of(cls, tcfg: Any, steps_per_epoch: int) -> "Budget":
        """The budget a TrainConfig sets (its validate() allows at most one; none means DEFAULT_EPOCHS)."""
        for kind in ("steps", "minutes"):
            if getattr(tcfg, kind) is not None:
                return cls(kind, getattr(tcfg, kind), steps_per_epoch)
        return cls("epochs", DEFAULT_EPOCHS if tcfg.epochs is None else tcfg.epochs, steps_per_epoch)

    @property
    def total_steps(self) -> int | None:
        """Steps in the whole run; None for a time budget."""
        if self.kind == "minutes":
            return None
        return int(self.amount) * (self.steps_per_epoch if self.kind == "epochs" else 1)

    @property
    def seconds(self) -> float | None:
        return self.amount * 60.0 if self.kind == "minutes" else None

    def spent(self, run_step: int, seconds: float) -> bool:
        """Whether the run is done after `run_step` steps and `seconds` of training."""
        total = self.total_steps
        return run_step >= total if total is not None else seconds >= self.seconds

    def fraction(self, run_step: int, seconds: float) -> float:
        """How much of the budget is used, in [0, 1]."""
        total = self.total_steps
        used = run_step / total if total is not None else seconds / self.seconds
        return min(max(used, 0.0), 1.0)

    def seconds_left(self, run_step: int, seconds: float, seconds_per_step: float) -> float:
        """Estimated training seconds to the budget's end, at `seconds_per_step` for a step budget."""
        total = self.total_steps
        left = (total - run_step) * seconds_per_step if total is not None else self.seconds - seconds
        return max(left, 0.0)

    def describe(self) -> str:
        """e.g. '3 epochs (1,467 steps)', '5,000 steps (10.2 epochs)', '90 minutes'."""
        if self.kind == "epochs":
            return f"{int(self.amount)} epoch{'s' * (self.amount != 1)} ({self.total_steps:,} steps)"
        if self.kind == "steps":
            return f"{int(self.amount):,} steps ({self.amount / self.steps_per_epoch:,.1f} epochs)"
        return f"{self.amount:g} minute{'s' * (self.amount != 1)}"

    def lr_function(self, lr: float, lr_final: float, decay: str, tf: Any, position: Any = None) -> Callable | None:
        """The in-graph rate for the optimizer's step count (None: a constant rate).

        For a step budget the position on the curve is the step count over the run's steps (the
        last step gets lr x lr_final); for a time budget it is `position`, a tf.Variable that the
        loop sets to seconds used / budget seconds before each step.
        """
        if decay == "none":
            return None
        total = self.total_steps
        if total is None and position is None:
            raise ValueError("a time budget's curve needs the position variable")
        last = float(max((total or 0) - 1, 1))

        def lr_at(iterations):
            if total is not None:
                at = tf.minimum(tf.cast(iterations, tf.float32) / last, 1.0)
            else:
                at = tf.minimum(tf.identity(position), 1.0)
            return lr * (lr_final + (1.0 - lr_final) * 0.5 * (1.0 + tf.cos(math.pi * at)))
        return lr_at
