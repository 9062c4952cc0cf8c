"""Stopped after any step and resumed, a run ends bit for bit where an uninterrupted one does.

The stop is a step-end callback (`StepEnd.stop()`, the Ctrl-C path: it saves a resumable
snapshot), so the point is exact, not a timer's. Compared with one uninterrupted run: every
step's loss, the weights, the optimizer's arrays, the training rows' state (and the dropout
RNG) in train_state.safetensors, the progress and the history (all but the wall-clock fields).
"""

import json

import numpy as np
import pytest

import chargen
from chargen import checkpoint as ckpt
from chargen.errors import TrainingInterrupted

from conftest import TINY

# dropout: the RNG state must be restored too; cosine decay: the schedule must continue from the right step
OPTIONS = dict(seed=11, dropout=0.1, lr_decay="cosine", progress=False, **TINY)
EPOCHS = 2
CLOCK = ("seconds", "chars_per_sec")  # wall-clock figures, the only things allowed to differ


class Losses:
    def __init__(self):
        self.seen: list[tuple[int, int, float]] = []

    def on_step_end(self, info):
        self.seen.append((info.epoch, info.step, info.loss))


class StopAfter(Losses):
    """Stop after step `step` of epoch `epoch` (0-based epoch; step 1..n, or -1 for the epoch's last)."""

    def __init__(self, epoch: int, step: int):
        super().__init__()
        self.epoch, self.step = epoch, step

    def on_step_end(self, info):
        super().on_step_end(info)
        if (info.epoch, info.step) == (self.epoch, info.num_batches if self.step == -1 else self.step):
            info.stop()


def _snapshot(run):
    snap = ckpt.read_snapshot(ckpt.snapshot_dir(run, "last"))
    progress = {k: v for k, v in snap.progress.items() if k not in CLOCK}  # "seconds": training time used
    progress["partial"] = {k: v for k, v in progress["partial"].items() if k != "seconds"}
    history = [{k: v for k, v in h.items() if k not in CLOCK} for h in snap.history]
    return snap, progress, history


@pytest.fixture(scope="module")
def book(tmp_path_factory, small_text):
    path = tmp_path_factory.mktemp("resume") / "book.txt"
    path.write_text(small_text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def uninterrupted(book):
    """run(cell) -> (the uninterrupted run, every step's loss), trained once per cell."""
    made = {}

    def run(cell):
        if cell not in made:
            losses = Losses()
            result = chargen.train(book, root=book.parent / f"whole-{cell}", epochs=EPOCHS, callbacks=[losses],
                                   cell=cell, **OPTIONS)
            made[cell] = result, losses.seen
        return made[cell]
    return run


@pytest.mark.parametrize("cell, epoch, step", [("lstm", 1, 1), ("lstm", 0, 37), ("lstm", 0, -1), ("gru", 0, 37)],
                         ids=["epoch-start", "middle", "last-step", "gru-middle"])
def test_stopped_after_a_step_and_resumed_is_bit_for_bit_one_run(book, uninterrupted, tmp_path, cell, epoch, step):
    whole, whole_losses = uninterrupted(cell)
    n = whole_losses[-1][1]  # steps per epoch
    assert 0 < 37 < n
    stop = StopAfter(epoch, step)
    with pytest.raises(TrainingInterrupted, match="interrupted at epoch"):
        chargen.train(book, root=tmp_path, epochs=EPOCHS, callbacks=[stop], cell=cell, **OPTIONS)
    stopped_at = (epoch, n if step == -1 else step)
    progress = json.loads((ckpt.snapshot_dir(tmp_path / "book", "last") / "progress.json").read_text())
    assert (progress["epoch"], progress["step"]) == stopped_at  # saved exactly after that step
    assert stop.seen == whole_losses[:len(stop.seen)] and stop.seen[-1][:2] == stopped_at

    rest = Losses()
    resumed = chargen.train(book, root=tmp_path, resume=True, callbacks=[rest], progress=False)
    assert stop.seen + rest.seen == whole_losses  # every step once, in order, with the same loss

    (a, pa, ha), (b, pb, hb) = _snapshot(whole.run_dir), _snapshot(resumed.run_dir)
    for what in ("weights", "optimizer", "train_state"):
        got, want = getattr(b, what), getattr(a, what)
        assert len(got) == len(want), what
        for i, (x, y) in enumerate(zip(got, want)):
            np.testing.assert_array_equal(x, y, err_msg=f"{what} array {i}")
    assert pb == pa
    assert hb == ha and len(ha) == EPOCHS
