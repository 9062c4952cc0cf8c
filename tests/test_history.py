"""`chargen history` and `chargen.history()`: reading history.jsonl, the table, the terminal chart."""

import json
import math
import re
import os
import shutil
import subprocess
import sys

import pytest

import chargen
from chargen.curves import (BOTH_MARK, TRAIN_MARK, VAL_MARK, best_epoch, chart, chart_text, read_history,
                            resample)
from chargen.errors import CheckpointError

from conftest import ROOT


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "chargen", *map(str, args)], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)


@pytest.fixture()
def run_copy(trained_run, tmp_path):
    """A copy of the session's trained run, free to damage."""
    root = tmp_path / "checkpoints"
    shutil.copytree(trained_run.run_dir, root / "book", symlinks=True)
    return root / "book"


def _rows(train, val=None):
    return [{"epoch": i + 1, "train_loss": t, "train_bpc": t, **({} if val is None else {"val_bpc": val[i]})}
            for i, t in enumerate(train)]


def _plot_rows(text):
    """The chart's plot area: the part right of the axis, one string per row, top first."""
    rows = [line for line in text.splitlines() if line[8:9] in ("┤", "│") and re.fullmatch(r"[ 0-9.-]{8}", line[:8])]
    return [line[9:] for line in rows]


# ------------------------------------------------------------------ the library and the command line

def test_library_reads_a_run_by_name_folder_or_newest(trained_run):
    run = trained_run.run_dir
    assert chargen.history("book", root=run.parent) == trained_run.history
    assert chargen.history(run) == trained_run.history
    assert chargen.history(root=run.parent) == trained_run.history  # the newest run
    assert [h["epoch"] for h in trained_run.history] == [1, 2]


def test_cli_prints_table_and_chart_without_colour_when_piped(trained_run):
    run = trained_run.run_dir
    r = cli("history", "book", "--root", run.parent, cwd=run.parent)
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stdout  # not a terminal: no colour codes
    assert "book: 2 epochs" in r.stdout
    for column in ("epoch", "steps", "train loss", "train bpc", "val loss", "val bpc", "chars/s", "seconds", "lr", "best"):
        assert column in r.stdout, column
    best = best_epoch(trained_run.history)
    for h in trained_run.history:
        row = next(line for line in r.stdout.splitlines() if line.startswith(f"│ {h['epoch']:>5} │"))
        assert f"{h['train_loss']:.4f}" in row and f"{h['val_bpc']:.3f}" in row
        assert ("*" in row) == (h["epoch"] == best)
    assert "bits per character" in r.stdout and TRAIN_MARK in r.stdout and VAL_MARK in r.stdout
    assert len(_plot_rows(r.stdout)) == 10


def test_cli_json_is_the_history(trained_run):
    run = trained_run.run_dir
    r = cli("history", run, "--json", cwd=run.parent)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == trained_run.history


@pytest.mark.parametrize("damage, needle", [
    (lambda t: t[: t.index("\n") + 30], "line 2 is not valid JSON"),  # cut short
    (lambda t: t + "{not json\n", "line 3 is not valid JSON"),
    (lambda t: t + "[1, 2]\n", "line 3 is not a JSON object"),
    (lambda t: t.replace('"train_loss"', '"trian_loss"', 1), "line 1 has no 'train_loss'"),
    (lambda t: t.replace('"val_bpc": ', '"val_bpc": "x', 1).replace(', "chars_per_sec"', '", "chars_per_sec"', 1),
     "line 1 has val_bpc 'x"),
    (lambda t: t.replace('"epoch": 2', '"epoch": 1'), "line 2 has epoch 1 after epoch 1"),
    (lambda t: t.replace('"epoch": 1', '"epoch": 0'), "line 1 has epoch 0, not a positive integer"),
    (lambda t: t.replace('"seconds": ', '"seconds": NaN, "x": ', 1), "line 1 has seconds nan, not a finite number"),
    (lambda t: t.encode("utf-8")[:10] + b"\xff\xfe" + t.encode("utf-8")[10:], "cannot read it"),
])
def test_damaged_history_is_one_line_exit_2(run_copy, damage, needle):
    path = run_copy / "history.jsonl"
    data = damage(path.read_text(encoding="utf-8"))
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    with pytest.raises(CheckpointError, match=needle.replace("(", r"\(")):
        chargen.history(run_copy)
    r = cli("history", "book", "--root", run_copy.parent, cwd=run_copy.parent)
    assert r.returncode == 2, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in lines[0] and "book/history.jsonl" in lines[0]
    if needle != "cannot read it":
        assert "the last snapshot holds a copy: book/snapshots/e0002-s000000/history.jsonl" in lines[0]
    assert r.stdout == ""


def test_missing_history_and_unknown_run(run_copy, tmp_path):
    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(CheckpointError, match="not-a-run/history.jsonl: missing"):
        chargen.history(tmp_path / "not-a-run")
    r = cli("history", "nope", "--root", run_copy.parent, cwd=run_copy.parent)
    assert r.returncode == 2 and "no checkpoint named 'nope'" in r.stderr and "book" in r.stderr


def test_a_run_with_no_finished_epoch(run_copy):
    (run_copy / "history.jsonl").unlink()  # as while the first epoch runs: config.json is there, no history yet
    assert chargen.history(run_copy) == []
    (run_copy / "history.jsonl").write_text("", encoding="utf-8")  # as after a Ctrl-C in the first epoch
    assert read_history(run_copy / "history.jsonl") == []
    r = cli("history", "book", "--root", run_copy.parent, cwd=run_copy.parent)
    assert r.returncode == 0 and "book: no epoch finished yet" in r.stdout
    r = cli("history", "book", "--root", run_copy.parent, "--json", cwd=run_copy.parent)
    assert r.returncode == 0 and json.loads(r.stdout) == []


# ------------------------------------------------------------------ the chart

def test_chart_of_one_epoch_is_one_column():
    text = chart(_rows([4.39], val=[4.25]), width=60, height=10)
    plot = _plot_rows(text)
    assert len(plot) == 10 and all(len(row) == 1 for row in plot)
    assert plot[0] == TRAIN_MARK and plot[-1] == VAL_MARK  # train above validation, at the ends of the scale
    assert "4.390" in text.splitlines()[0] and "4.250" in text.splitlines()[9]
    assert "epoch 1" in text
    styles = {str(span.style) for span in chart_text(_rows([4.39], val=[4.25])).spans}
    assert {"cyan", "magenta"} <= styles  # colour, which rich drops when the output is not a terminal
    # one epoch without validation: a flat scale, the point in the middle, labels around it
    flat = _plot_rows(chart(_rows([2.0]), height=5))
    assert flat == [" ", " ", TRAIN_MARK, " ", " "]


def test_chart_of_many_epochs_fits_the_width_and_follows_the_curve():
    n = 200
    train = [1 + 3 * math.exp(-i / 30) for i in range(n)]
    val = [t + 0.3 for t in train]
    text = chart(_rows(train, val), width=60, height=10)
    plot = _plot_rows(text)
    assert len(plot) == 10 and all(len(row) == 60 for row in plot)
    columns = ["".join(row[x] for row in plot) for x in range(60)]
    assert all(c.strip() for c in columns)  # every column shows something
    top = lambda c, mark: min(i for i, ch in enumerate(c) if ch in (mark, BOTH_MARK))  # noqa: E731
    assert top(columns[0], VAL_MARK) <= 1 and top(columns[-1], TRAIN_MARK) == 9  # falls from top to bottom
    assert all(top(columns[x], TRAIN_MARK) <= top(columns[x + 1], TRAIN_MARK) for x in range(59))  # never rises
    assert text.splitlines()[11].rstrip().endswith("200") and "epoch 1" in text.splitlines()[11]
    # 200 epochs in 60 columns: each column is the mean of its 3 or 4 epochs, and the scale spans those
    assert f"{resample(val, 60)[0]:7.3f} ┤" in text and f"{resample(train, 60)[-1]:7.3f} ┤" in text


def test_chart_of_a_few_epochs_is_stretched_and_without_validation_has_one_series():
    text = chart(_rows([3.0, 2.0, 1.5]), width=20, height=6)
    plot = _plot_rows(text)
    assert all(len(row) == 20 for row in plot)
    assert plot[0][0] == TRAIN_MARK and plot[-1][-1] == TRAIN_MARK
    assert VAL_MARK not in text.replace("○ val", "") and "val" not in text


def test_resample_keeps_the_ends_when_stretching_and_averages_when_shrinking():
    assert resample([1.0, 3.0], 5) == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert resample([4.0], 3) == [4.0, 4.0, 4.0]
    assert resample([1.0, 2.0, 3.0, 4.0], 2) == [1.5, 3.5]
    assert resample(list(range(200)), 60)[0] < resample(list(range(200)), 60)[-1]
    assert len(resample(list(range(7)), 3)) == 3


def test_best_epoch_is_the_first_lowest_validation_loss_or_training_loss_without_it():
    rows = [{"epoch": 1, "train_loss": 3, "val_loss": 2}, {"epoch": 2, "train_loss": 2, "val_loss": 1.5},
            {"epoch": 3, "train_loss": 1, "val_loss": 1.5}]
    assert best_epoch(rows) == 2
    assert best_epoch([dict(r, val_loss=None) for r in rows]) == 3
    assert best_epoch([]) is None
