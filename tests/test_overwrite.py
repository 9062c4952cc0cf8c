"""--overwrite never loses the old run until the new one has a complete snapshot (issue #11 item 6): a new run
that diverges, or is killed with -9 before its first save, leaves the old run's files exactly as they were."""

import fcntl
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

import chargen
from chargen import checkpoint as ckpt
from chargen.runlock import LOCK_FILE

from conftest import TINY
from test_reliability import ENV, TINY_FLAGS, _book, cli, one_line


def _tree(run: Path) -> dict:
    """Every entry under `run` (links not followed): a file's bytes, a link's target; the lock file left out."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(run):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if name != LOCK_FILE:
                out[str(p.relative_to(run))] = ("link", os.readlink(p)) if p.is_symlink() else (
                    p.read_bytes() if p.is_file() else "folder")
    return out


def _sample(cwd):
    r = cli("sample", "--checkpoint", "book", "--root", "ck", "--seed", "the ", "--length", 40, "--rng-seed", 2,
            cwd=cwd)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory, small_text):
    """A 2-epoch run and the text it samples, made once; each test gets a copy (old_run)."""
    d = tmp_path_factory.mktemp("old")
    book = _book(d, small_text)
    chargen.train(book, root=d / "ck", epochs=2, seed=1, progress=False, **TINY)
    return d, _sample(d)


@pytest.fixture()
def old_run(tmp_path, trained_once):
    source, text = trained_once
    shutil.copytree(source / "ck", tmp_path / "ck", symlinks=True)
    shutil.copy(source / "book.txt", tmp_path / "book.txt")
    run = tmp_path / "ck" / "book"
    return run, _tree(run), text


def test_an_overwrite_that_diverges_leaves_the_old_run_unchanged(tmp_path, old_run):
    run, before, text = old_run
    line = one_line(cli("train", "book.txt", "--root", "ck", "--overwrite", "--lr", "1e30", "--clip", 0,
                        "--epochs", 2, "--seed", 1, "--quiet", *TINY_FLAGS, cwd=tmp_path))
    assert "training diverged" in line and "nothing was saved and the run it was to replace is unchanged" in line
    assert _tree(run) == before  # links, snapshots and the run's copies, byte for byte
    assert _sample(tmp_path) == text


def _train_on_a_terminal(args, cwd):
    """A real `chargen train` whose stderr is a terminal (a pty), so that it draws its progress bar."""
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # tqdm draws no bar 0 columns wide
    p = subprocess.Popen([sys.executable, "-m", "chargen", *map(str, args)], cwd=cwd, env=ENV,
                         stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    return p, master


def _wait_for_a_step(p, master, timeout=300):
    """Read the bar until it shows a finished step of epoch 1 (training has started; nothing is saved before the
    epoch's end), then return."""
    shown, end = b"", time.monotonic() + timeout
    while not re.search(rb"epoch 1/1: .*\| *[1-9][0-9]*/[0-9]+ \[", shown):
        assert p.poll() is None, f"the run ended (rc {p.returncode}) before a step: {shown[-2000:]!r}"
        assert time.monotonic() < end, f"no step after {timeout} s: {shown[-2000:]!r}"
        if select.select([master], [], [], 0.05)[0]:
            try:
                shown += os.read(master, 1 << 16)
            except OSError:  # EIO: the process closed the terminal (it is ending)
                time.sleep(0.05)


def test_an_overwrite_killed_before_its_first_save_leaves_the_old_run_unchanged(tmp_path, old_run, small_text):
    run, before, text = old_run
    (tmp_path / "long.txt").write_text(small_text * 50, encoding="utf-8")  # an epoch of seconds before any save
    p, master = _train_on_a_terminal(["train", "long.txt", "--name", "book", "--root", "ck", "--overwrite",
                                      "--epochs", 1, *TINY_FLAGS], tmp_path)
    try:
        _wait_for_a_step(p, master)
    finally:
        p.kill()
        p.wait()
        os.close(master)
    assert _tree(run) == before
    assert _sample(tmp_path) == text
    r = cli("train", "book.txt", "--root", "ck", "--overwrite", "--epochs", 1, "--seed", 5, *TINY_FLAGS, cwd=tmp_path)
    assert r.returncode == 0, r.stderr  # the killed run's lock died with it
    assert [h["epoch"] for h in chargen.history(run)] == [1]
    assert os.listdir(run / "snapshots") == [os.path.basename(ckpt.read_pointer(run, "last"))]  # the old ones are gone


class _StopAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, info):
        if info.step == self.step:
            info.stop()


def test_the_first_snapshot_of_an_overwrite_replaces_the_old_run(tmp_path, old_run):
    run, before, _ = old_run
    with pytest.raises(chargen.TrainingInterrupted):  # stopped mid-epoch: a resumable snapshot is saved
        chargen.train(tmp_path / "book.txt", root=tmp_path / "ck", overwrite=True, epochs=3, seed=7, progress=False,
                      callbacks=[_StopAt(3)], **TINY)
    assert ckpt.read_pointer(run, "last") == "snapshots/e0000-s000003"
    assert not os.path.lexists(run / "best")  # the old run's best is not this run's
    assert os.listdir(run / "snapshots") == ["e0000-s000003"]
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 7  # the run's copies are the new run's
    assert (run / "history.jsonl").read_text() == ""
    assert chargen.load(run).source.name == "e0000-s000003"  # best falls back to last
    result = chargen.train(tmp_path / "book.txt", root=tmp_path / "ck", resume=True, progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert ckpt.read_pointer(run, "best").startswith("snapshots/e000")
