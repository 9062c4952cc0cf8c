"""One trainer per run (issue #11 item 5): a real training process holds RUN/train.lock; a second train,
--resume or --overwrite is refused at once naming it, readers keep working, and kill -9 leaves no lock."""

import json
import os
import subprocess
import sys

import pytest

import chargen
from chargen import runlock
from chargen.errors import RunLockedError
from chargen.runlock import LOCK_FILE, RunLock

from test_reliability import ENV, TINY_FLAGS, _book, cli, one_line, wait_for


def test_a_run_being_trained_refuses_a_second_trainer_and_stays_readable(tmp_path, small_text):
    _book(tmp_path, small_text)
    run = tmp_path / "ck" / "run"
    base = ["train", "book.txt", "--name", "run", "--root", "ck", "--seed", 1, *TINY_FLAGS]
    p = subprocess.Popen([sys.executable, "-m", "chargen", *map(str, base), "--epochs", "100000"], cwd=tmp_path,
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: os.nice(19))  # niced, so that the commands below get the cores
    try:
        wait_for(lambda: (run / "last").exists(), p, "the first snapshot")
        holder = json.loads((run / LOCK_FILE).read_text())
        assert holder["pid"] == p.pid and holder["started"]
        for extra in ([], ["--resume"], ["--overwrite"]):
            line = one_line(cli(*base, "--epochs", 2, *extra, cwd=tmp_path))
            assert f"is being trained by process {p.pid} (started " in line, line
            assert f"kill -INT {p.pid}" in line
        where = ["--root", "ck"]
        r = cli("sample", "--checkpoint", "run", *where, "--which", "last", "--length", 20, "--rng-seed", 1,
                cwd=tmp_path)
        assert r.returncode == 0 and len(r.stdout.rstrip("\n")) == 20, r.stderr
        r = cli("history", "run", *where, "--json", cwd=tmp_path)
        assert r.returncode == 0 and json.loads(r.stdout)[0]["epoch"] == 1, r.stderr
        r = cli("eval", "book.txt", "--checkpoint", "run", *where, "--which", "last", "--json", cwd=tmp_path)
        assert r.returncode == 0 and json.loads(r.stdout)["bits_per_char"] > 0, r.stderr
        r = cli("export", "run", *where, "--which", "last", "--format", "tflite", "--out", "exp", cwd=tmp_path)
        assert r.returncode == 0 and (tmp_path / "exp" / "model.tflite").is_file(), r.stderr
        assert p.poll() is None  # still training all along
    finally:
        p.kill()
        p.communicate()
    assert (run / LOCK_FILE).exists()  # kill -9 ran no clean-up: the file stays, but the OS dropped the lock
    runlock.refuse_if_locked(run)  # so nothing refuses the next trainer (test_overwrite.py runs one after kill -9)


def test_the_lock_in_one_process(tmp_path):
    run = tmp_path / "root" / "deeper" / "run"
    with RunLock(run):
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(chargen.RunLockedError, match=f"being trained by process {os.getpid()}"):
            RunLock(run).acquire()  # flock locks an open file: a second open is refused, even here
        with pytest.raises(RunLockedError):
            runlock.refuse_if_locked(run)
    runlock.refuse_if_locked(run)
    assert not (tmp_path / "root").exists()  # nothing but the lock was written: the folders it made are gone
    with RunLock(run):
        (run / "kept.txt").write_text("a file of the run")
    assert sorted(os.listdir(run)) == ["kept.txt"]


@pytest.mark.parametrize("folder_existed", [True, False])
def test_a_holder_finishing_while_another_takes_the_lock_never_gives_two_holders(tmp_path, monkeypatch, folder_existed):
    run = tmp_path / "run"
    if folder_existed:
        run.mkdir()
    first = RunLock(run)
    first.acquire()
    real_flock, finished = runlock.fcntl.flock, []

    def flock(fd, op):
        if not finished:  # the holder ends (and removes the file) after `second` opened it, before it locks it
            finished.append(first.release())
        return real_flock(fd, op)

    monkeypatch.setattr(runlock.fcntl, "flock", flock)
    second = RunLock(run)
    second.acquire()
    monkeypatch.undo()
    try:
        with pytest.raises(RunLockedError):  # the file the path names now is the one `second` holds
            RunLock(run).acquire()
    finally:
        second.release()


def test_without_fcntl_training_runs_unlocked(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "fcntl", None)  # Windows
    run = tmp_path / "run"
    with RunLock(run), RunLock(run):
        assert run.is_dir() and not (run / LOCK_FILE).exists()
    runlock.refuse_if_locked(run)
