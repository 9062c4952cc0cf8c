"""What a run prints: plain timestamped lines when stderr is a file (the "what is used" line, a progress
line every --log-every seconds, every epoch, the end), the bar on a real terminal (a pty), and the
library's defaults. The JSON form is in test_signals.py (under nohup)."""

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios

import pytest

import chargen
from chargen import checkpoint as ckpt

from conftest import TINY
from runs import ENV, PROGRESS, PROGRESS_BODY, STAMP, TINY_FLAGS, chargen_argv, history, start
from test_budgets import steps_per_epoch

RUN = ["train", "book.txt", "--root", "ck", "--epochs", 2, "--seed", 1, *TINY_FLAGS]


def test_a_log_file_gets_what_is_used_progress_epochs_and_the_end(tmp_path, small_text):
    (tmp_path / "book.txt").write_text(small_text, encoding="utf-8")
    n, log = steps_per_epoch(small_text), tmp_path / "train.log"
    p = start(*RUN, "--log-every", 0, cwd=tmp_path, log=log)  # 0: a line after every step (but the first)
    assert p.wait(timeout=600) == 0
    lines = log.read_text().splitlines()
    assert re.fullmatch(
        STAMP + r"training ck/book \(new run, seed 1\): LSTM 24,16, embed 8, \d+ tokens \(char\), [\d,]+ parameters, "
        r"fast kernel, fp32 \(auto: layers under 256 units train faster in fp32\); "
        rf"4 streams x 16 = 64 chars a step, {n} steps an epoch; budget 2 epochs \({2 * n} steps\), "
        r"lr 0.003 cosine to 0.0003; validation 4 streams \(\d+ steps\); a snapshot every 30 min", lines[0]), lines[0]
    progress = [PROGRESS.fullmatch(line) for line in lines[1:-2]]
    epochs = [i for i, m in enumerate(progress, 1) if m is None]
    seen = [(int(m["epoch"]), int(m["step"]), m["of"]) for m in progress if m]
    assert seen == [(e, s, str(n)) for e in (1, 2) for s in range(2, n + 1)]
    for m in filter(None, progress):
        assert float(m["pct"]) == round(100 * int(m["step"]) / n, 1) and float(m["loss"]) > 0
        assert float(m["bpc"]) * 0.693 == pytest.approx(float(m["loss"]), rel=2e-3)
    rows = history(ckpt.snapshot_dir(tmp_path / "ck" / "book", "last"))
    for i, row in zip(epochs, rows):
        assert re.fullmatch(STAMP + rf"epoch {row['epoch']}: train {row['train_loss']:.4f} nats \({row['train_bpc']:.3f} "
                            rf"bpc\)  val {row['val_loss']:.4f} nats \({row['val_bpc']:.3f} bpc\)  [\d,]+ chars/s(  \*best)?",
                            lines[i]), lines[i]
    assert re.fullmatch(STAMP + rf"finished {2 * n} steps \(2.00 epochs\) in \w+ of training, the budget of 2 epochs "
                        rf"\({2 * n} steps\); best val loss {min(r['val_loss'] for r in rows):.4f} nats", lines[-2]), lines[-2]
    assert lines[-1] == f"checkpoint: ck/book  (sample with: chargen sample --checkpoint book --root {tmp_path / 'ck'})"


def test_a_terminal_gets_the_bar_and_no_log_lines(tmp_path, small_text):
    (tmp_path / "book.txt").write_text(small_text, encoding="utf-8")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    p = subprocess.Popen(chargen_argv(*RUN), cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert p.wait(timeout=60) == 0
    text = out.decode("utf-8", "replace")
    n = steps_per_epoch(small_text)
    assert re.search(rf"epoch 1/2: +100%.*\| {n}/{n} \[", text) and re.search(rf"epoch 2/2: +100%.*\| {n}/{n} \[", text)
    assert text.startswith("training ck/book (new run, seed 1): LSTM 24,16")  # no date: the bar is the clock
    assert "epoch 1: train" in text and not re.search(STAMP, text)


def test_the_library_prints_lines_unless_told_not_to(tmp_path, small_text, capfd):
    book = tmp_path / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    opts = dict(steps=6, seed=1, **TINY)
    chargen.train(book, root=tmp_path / "a", log_every=0, **opts)  # stderr is not a terminal here: lines
    lines = capfd.readouterr().err.splitlines()
    assert lines[0].split(" ", 3)[2] == "training" and [PROGRESS.fullmatch(s)["step"] for s in lines[1:-2]] == list("23456")
    assert re.match(STAMP + "budget of 6 steps .* used at epoch 1, step 6/", lines[-2]) and " finished 6 steps" in lines[-1]

    told = []
    chargen.train(book, root=tmp_path / "b", log_every=0, log=told.append, progress=False, **opts)  # to `log`
    assert capfd.readouterr().err == "" and len(told) == len(lines)

    def figures(log, stamp):
        return [re.fullmatch(stamp + PROGRESS_BODY, s).group("step", "loss", "lr") for s in log[1:-2]]
    assert figures(told, "") == figures(lines, STAMP)  # the same run, the same lines, without the date

    rare = []
    chargen.train(book, root=tmp_path / "c", log_every=3600, log=rare.append, **opts)  # a progress line an hour
    assert [s.split(" ", 1)[0] for s in rare] == ["training", "budget", "finished"]
    chargen.train(book, root=tmp_path / "d", progress=False, **opts)
    assert capfd.readouterr().err == ""
