"""--steps and --minutes budgets: the cosine curve planned over them, a mid-epoch end that validates,
saves and returns, resuming on the same plan (bit for bit) or a larger one, and how `chargen history`
shows the partial epoch. A step clock stands in for the wall clock, so a time budget counts steps."""

import json
import math

import pytest

import chargen
from chargen import checkpoint as ckpt
from chargen.curves import read_history
from chargen.errors import CheckpointError, ConfigError, TrainingInterrupted
from chargen.streams import Streams, split
from chargen.tokenizer import build_tokenizer

from conftest import TINY
from runs import assert_same_run, cli, history


class StopAt:
    """Stops the run after its `run_step`-th step, as a Ctrl-C would."""

    def __init__(self, run_step: int):
        self.run_step = run_step

    def on_step_end(self, info) -> None:
        if info.epoch * info.num_batches + info.step == self.run_step:
            info.stop()


def steps_per_epoch(text: str) -> int:
    ids = build_tokenizer("char", text, None).encode(text)
    return Streams.from_ids(split(ids, 0.1)[0], TINY["batch_size"], TINY["seq_len"]).num_batches


def cosine(lr, final, at):
    return lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * at)))


@pytest.fixture()
def book(tmp_path, small_text):
    path = tmp_path / "book.txt"
    path.write_text(small_text, encoding="utf-8")
    return path


def _train(book, root, **options):
    return chargen.train(book, root=root, progress=False, **{"seed": 7, "lr": 0.01, "lr_final": 0.2, **TINY, **options})


def test_a_step_budget_ends_mid_epoch_validated_and_saved_and_a_larger_one_extends_it(tmp_path, book, small_text):
    n = steps_per_epoch(small_text)
    run = tmp_path / "ck" / "book"
    rows = _train(book, tmp_path / "ck", steps=n + 5).history  # returns normally
    assert [(r["epoch"], r["steps"], r.get("partial")) for r in rows] == [(1, n, None), (2, 5, True)]
    assert rows[1]["steps_per_epoch"] == n and rows[1]["val_loss"] is not None  # validated at the budget's end
    assert rows[1]["lr"] == pytest.approx(0.01 * 0.2, rel=1e-5)  # the curve was planned over n + 5 steps
    assert ckpt.read_pointer(run, "last") == "snapshots/e0001-s000005"
    better = rows[1]["val_loss"] < rows[0]["val_loss"]
    assert ckpt.read_pointer(run, "best") == ("snapshots/e0001-s000005" if better else "snapshots/e0001-s000000")
    assert history(ckpt.snapshot_dir(run, "last")) == rows == [json.loads(s) for s in
                                                               (run / "history.jsonl").read_text().splitlines()]

    r = cli("history", "book", "--root", "ck", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"book: 1 epoch and {100 * 5 / n:.0f}% of epoch 2" in r.stdout and f"2 ({100 * 5 / n:.0f}%)" in r.stdout
    assert json.loads(cli("history", "book", "--root", "ck", "--json", cwd=tmp_path).stdout) == rows

    again = _train(book, tmp_path / "ck", resume=True)  # the same budget: nothing left to do
    assert again.history == rows and ckpt.read_pointer(run, "last") == "snapshots/e0001-s000005"

    longer = _train(book, tmp_path / "ck", resume=True, steps=2 * n + 3).history
    assert [(r["epoch"], r["steps"], r.get("partial")) for r in longer] == [(1, n, None), (2, n, None), (3, 3, True)]
    assert longer[0] == rows[0] and longer[2]["lr"] == pytest.approx(0.01 * 0.2, rel=1e-5)
    assert json.loads((ckpt.snapshot_dir(run, "last") / "progress.json").read_text())["step"] == 3


@pytest.mark.parametrize("budget", [{"steps": 75}, {"minutes": 1.25}])  # 75 steps either way (1 s a step)
def test_a_budget_run_stopped_and_resumed_follows_the_same_plan_bit_for_bit(tmp_path, book, step_clock, budget):
    whole = _train(book, tmp_path / "a", callbacks=[step_clock], **budget)
    assert sum(r["steps"] for r in whole.history) == 75
    with pytest.raises(TrainingInterrupted):
        _train(book, tmp_path / "b", callbacks=[step_clock, StopAt(30)], **budget)
    resumed = _train(book, tmp_path / "b", resume=True, callbacks=[step_clock])  # the budget comes from the run
    assert_same_run(ckpt.snapshot_dir(whole.run_dir, "last"), ckpt.snapshot_dir(resumed.run_dir, "last"))
    if "minutes" in budget:
        assert json.loads((ckpt.snapshot_dir(resumed.run_dir, "last") / "progress.json").read_text())["seconds"] == 75.0


def test_a_time_budget_plans_the_curve_over_the_seconds_used(tmp_path, book, step_clock):
    rows = _train(book, tmp_path / "ck", minutes=1.25, callbacks=[step_clock]).history
    assert sum(r["steps"] for r in rows) == 75
    assert rows[-1]["lr"] == pytest.approx(cosine(0.01, 0.2, 74 / 75), rel=1e-5)  # the last step began at 74 s of 75
    if len(rows) > 1:
        first = rows[0]["steps"]
        assert rows[0]["lr"] == pytest.approx(cosine(0.01, 0.2, (first - 1) / 75), rel=1e-5)
    longer = _train(book, tmp_path / "ck", resume=True, minutes=1.5, callbacks=[step_clock]).history
    assert sum(r["steps"] for r in longer) == 90
    assert longer[-1]["lr"] == pytest.approx(cosine(0.01, 0.2, 89 / 90), rel=1e-5)


@pytest.mark.parametrize("options, error, needle", [
    ({"epochs": 2, "steps": 5}, ConfigError, "epochs and steps are alternatives: give one budget"),
    ({"steps": 5, "minutes": 1}, ConfigError, "steps and minutes are alternatives"),
    ({"steps": 0}, ConfigError, "steps must be a positive integer, got 0"),
    ({"minutes": 0}, ConfigError, "minutes must be a positive number, got 0"),
    ({"minutes": float("nan")}, ConfigError, "minutes must be a positive number, got nan"),
    ({"save_every": -1}, ConfigError, "save_every must be a number of minutes >= 0"),
    ({"log_every": -1}, ConfigError, "log_every must be a number of seconds >= 0"),
    ({"log_format": "xml"}, ConfigError, "log_format must be one of text, json, got 'xml'"),
    ({"progress": "yes"}, TypeError, "progress must be True, False or None"),
    ({"log": "train.log"}, TypeError, "log must be a function that takes each line"),
])
def test_bad_budget_and_log_options_are_refused_before_training(tmp_path, book, options, error, needle):
    with pytest.raises(error, match=needle):
        chargen.train(book, root=tmp_path / "ck", **{"progress": False, **TINY, **options})
    assert not (tmp_path / "ck").exists()


def test_a_damaged_partial_row_is_refused(tmp_path):
    path = tmp_path / "history.jsonl"
    row = {"epoch": 1, "steps": 5, "train_loss": 1.0, "train_bpc": 1.4}
    path.write_text(json.dumps({**row, "partial": True, "steps_per_epoch": 50}) + "\n")
    assert read_history(path)[0]["partial"] is True
    for bad in ({"partial": "yes", "steps_per_epoch": 50}, {"partial": True}, {"partial": True, "steps_per_epoch": 0}):
        path.write_text(json.dumps({**row, **bad}) + "\n")
        with pytest.raises(CheckpointError, match="line 1 has partial"):
            read_history(path)
