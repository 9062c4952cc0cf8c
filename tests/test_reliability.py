"""What chargen does when things go wrong: Ctrl-C, kill -9, corrupted checkpoints, divergence,
an unwritable checkpoint root, a full disk, and out-of-range options. Real subprocesses where a
user would see the command line; tiny models throughout."""

import errno
import json
import os
import pickle
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import chargen
from chargen import checkpoint as ckpt
from chargen import trainer as train_mod
from chargen.errors import CheckpointError
from chargen.trainer import TrainingDiverged

import runs
from conftest import ROOT, TINY

TINY_FLAGS = ["--units", ",".join(map(str, TINY["units"])), "--embed", TINY["embed"],
              "--batch-size", TINY["batch_size"], "--seq-len", TINY["seq_len"]]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "chargen", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)


def popen(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "chargen", *map(str, args)], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def one_line(r, code=2) -> str:
    """The CLI contract for a failure: exit `code`, exactly one line on stderr, no traceback."""
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def wait_for(cond, proc, what, timeout=180):
    end = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _book(tmp_path, text):
    book = tmp_path / "book.txt"
    book.write_text(text, encoding="utf-8")
    return book


def _weights(snapshot):
    return ckpt.read_snapshot(snapshot, with_training=False).weights


# ------------------------------------------------------------------ 1. Ctrl-C

def test_ctrl_c_saves_at_the_end_of_the_step_and_the_printed_resume_command_finishes(tmp_path, small_text,
                                                                                      reference_run):
    _book(tmp_path, small_text)
    run, log = tmp_path / "ck" / "run", tmp_path / "train.log"
    p = runs.start("train", "book.txt", "--name", "run", "--root", "ck", "--epochs", 3, "--seed", 1, "--log-every", 0,
                   *TINY_FLAGS, cwd=tmp_path, log=log)
    runs.wait_for_line(p, log, runs.PROGRESS)  # training is under way
    p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=300)
    line = runs.last_line(log.read_text(), rc, 130)
    progress = json.loads((ckpt.snapshot_dir(run, "last") / "progress.json").read_text())
    assert progress["epoch"] < 3 and (progress["epoch"], progress["step"]) != (0, 0)  # the step in flight finished
    assert line.startswith(f"chargen: interrupted at epoch {progress['epoch'] + 1}, step {progress['step']}; ")

    command = line.split("Resume with: ", 1)[1]
    assert command == "chargen train book.txt --name run --root ck --resume"
    argv = shlex.split(command)
    r = cli(*argv[1:], cwd=tmp_path)  # exactly what the message says, from the same folder
    assert r.returncode == 0, r.stderr
    history = [json.loads(s) for s in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert len(chargen.load(run).generate("the ", 10, temperature=0)) == 10
    # interrupted mid-epoch and resumed == never interrupted
    runs.assert_same_run(reference_run(epochs=3, seed=1), ckpt.snapshot_dir(run, "last"))


def test_resume_command_names_the_book_and_a_non_default_root(tmp_path):
    cmd = train_mod.resume_command
    assert cmd("my book.txt", ckpt.DEFAULT_ROOT / "b") == "chargen train 'my book.txt' --name b --resume"
    assert cmd("/x/b.txt", tmp_path / "runs" / "b") == f"chargen train /x/b.txt --name b --root {tmp_path / 'runs'} --resume"


# ------------------------------------------------------------------ 2. kill -9

def test_kill_9_at_random_moments_never_leaves_last_incomplete(tmp_path, small_text):
    _book(tmp_path, small_text[:300])  # 4 steps an epoch: a snapshot is being written much of the time
    run = tmp_path / "ck" / "run"
    base = ["train", "book.txt", "--name", "run", "--root", "ck", "--val-fraction", 0, "--seed", 2, *TINY_FLAGS]
    delays = [random.uniform(0.0, 0.4) for _ in range(3)]
    seen, done = None, 0
    for i, delay in enumerate(delays):
        p = popen(*base, "--epochs", 100000, *(["--resume"] if i else []), cwd=tmp_path)
        wait_for(lambda: ckpt.read_pointer(run, "last") not in (None, seen), p, "a new snapshot")
        time.sleep(delay)
        p.kill()
        p.communicate()
        where = f"kill {i + 1} of {len(delays)}, {delay:.3f} s after a new snapshot (delays {delays})"
        snap = ckpt.snapshot_dir(run, "last")
        for name in ckpt.SNAPSHOT_FILES + ckpt.TRAINING_FILES:
            assert (snap / name).is_file(), f"{name} missing after {where}"
        gen = chargen.load(run, which="last")
        assert len(gen.generate("the ", 5, temperature=0)) == 5, where
        progress = json.loads((snap / "progress.json").read_text())
        assert progress["epoch"] >= done, where
        seen, done = ckpt.read_pointer(run, "last"), progress["epoch"]
    r = cli(*base, "--epochs", done + 1, "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    history = [json.loads(s) for s in (ckpt.snapshot_dir(run, "last") / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, done + 2))


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs, not even clean-up code (rmtree is switched off)."""


@pytest.mark.parametrize("snap_id", ["e0009-s000000", "e0002-s000000"])  # a new one, or the one `last` names
def test_a_crash_at_every_step_of_a_snapshot_write_leaves_last_complete(trained_run, tmp_path, monkeypatch, snap_id):
    src = ckpt.snapshot_dir(trained_run.run_dir, "last")
    files = {n: (src / n).read_text() for n in ("config.json", "tokenizer.json", "progress.json", "history.jsonl")}
    arrays = {n: ckpt.read_tensors(src / n) for n in ckpt.ARRAY_FILES[ckpt.VERSION].values()}
    real = {name: getattr(os, name) for name in ("fsync", "replace", "symlink", "unlink", "rmdir")}
    real["rmtree"] = shutil.rmtree
    for k in range(1000):
        run = tmp_path / f"run{k}"
        shutil.copytree(trained_run.run_dir, run, symlinks=True)
        calls = []

        def op(name):
            def call(*a, **kw):
                calls.append(name)
                if len(calls) == k + 1:
                    monkeypatch.setattr(shutil, "rmtree", lambda *a, **kw: None)
                    raise Killed(name)
                return real[name](*a, **kw)
            return call

        for name in real:
            monkeypatch.setattr(*(shutil, name) if name == "rmtree" else (os, name), op(name))
        try:
            ckpt.write_snapshot(run, snap_id, files, arrays, ("last", "best"))
        except Killed:
            pass
        finally:
            monkeypatch.undo()
        for which in ("last", "best"):  # both name a complete snapshot, the old or the new one
            ckpt.read_snapshot(ckpt.snapshot_dir(run, which))
        ckpt.write_snapshot(run, "e0010-s000000", files, arrays)  # the run goes on after a restart
        named = {os.path.basename(ckpt.read_pointer(run, n)) for n in ("last", "best")}
        assert "e0010-s000000" in named and sorted(os.listdir(run / "snapshots")) == sorted(named), calls
        if len(calls) <= k:  # the write finished without reaching a k-th operation: all points tried
            break
    assert k > 10


# ------------------------------------------------------------------ 3. corrupted checkpoints

def _edit_json(name, change):
    def edit(d):
        doc = json.loads((d / name).read_text())
        change(doc)
        (d / name).write_text(json.dumps(doc))
    return edit


def _drop_last_char(doc):
    vocab = doc["model"]["vocab"]
    del vocab[max(vocab, key=vocab.get)]


def _save_arrays(name, make):
    """Rewrite a snapshot's array file `name` with make({name: array}) -> {name: array}, as a correct writer would."""
    def save(d):
        from safetensors.numpy import save

        (d / name).write_bytes(save(make(ckpt.read_tensors(d / name))))
    return save


def _without(key):
    return lambda arrays: {k: a for k, a in arrays.items() if k != key}


def _truncate(name, keep):
    return lambda d: (d / name).write_bytes((d / name).read_bytes()[:int(keep * (d / name).stat().st_size)])


CORRUPTIONS = {
    "truncated weights": (_truncate("model.safetensors", 0.5), "model.safetensors: its arrays end at byte"),
    "empty weights": (_truncate("model.safetensors", 0), "model.safetensors: it has 0 bytes"),
    "missing tokenizer": (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json: missing"),
    "config not JSON": (lambda d: (d / "config.json").write_text("{not json"), "config.json: unreadable"),
    "version 99": (_edit_json("config.json", lambda c: c.update(version=99)), "version 99 is newer"),
    "tokenizer vs config": (_edit_json("tokenizer.json", _drop_last_char), "do not belong together"),
    "tokenizer and config vs weights": (
        lambda d: (_edit_json("tokenizer.json", _drop_last_char)(d), _edit_json(
            "config.json", lambda c: c["model"].update(vocab_size=c["model"]["vocab_size"] - 1))(d)),
        "model.safetensors: 'embedding' has shape"),
    "config asks for a bigger model": (_edit_json("config.json", lambda c: c["model"].update(embed=100_000)),
                                       "model.safetensors: 'embedding' has shape"),
    "Lambda model": (_edit_json("config.json", lambda c: c.update(model={
        "class_name": "Lambda", "config": {"function": "__import__('os').system('touch pwned')"}})),
        "unknown keys ['class_name', 'config']"),
    "Lambda key": (_edit_json("config.json", lambda c: c["model"].update(class_name="Lambda")),
                   "unknown keys ['class_name']"),
    "layer spec as units": (_edit_json("config.json", lambda c: c["model"].update(
        units=[{"class_name": "LSTM", "config": {"units": 24}}])), "units must be a list of positive integers"),
    "a pickle for weights": (lambda d: (d / "model.safetensors").write_bytes(pickle.dumps(np.array([{"x": 1}]))),
                             "model.safetensors: its header length"),
    "NaN weights": (_save_arrays("model.safetensors", lambda a: {**a, "embedding": np.full_like(a["embedding"], np.nan)}),
                    "NaN or Inf"),
    "bad progress": (_edit_json("progress.json", lambda p: p.update(step="x")), "progress.json: corrupted"),
}


@pytest.fixture()
def corrupt(trained_run, tmp_path):
    def make(case):
        d = tmp_path / "snap"
        shutil.copytree(ckpt.snapshot_dir(trained_run.run_dir, "last"), d)
        CORRUPTIONS[case][0](d)
        return d
    return make


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupted_checkpoint_is_a_checkpoint_error_before_any_model_is_built(corrupt, case, monkeypatch):
    import chargen.generate

    def no_model(*a, **k):
        raise AssertionError("a model was built from a corrupted checkpoint")

    monkeypatch.setattr(chargen.generate, "build_model", no_model)
    with pytest.raises(CheckpointError, match=re.escape(CORRUPTIONS[case][1])):
        chargen.load(corrupt(case))


@pytest.mark.parametrize("case", ["truncated weights", "missing tokenizer", "version 99",
                                  "tokenizer and config vs weights", "Lambda model", "layer spec as units"])
def test_corrupted_checkpoint_at_the_command_line(corrupt, case, tmp_path):
    d = corrupt(case)
    line = one_line(cli("sample", "--checkpoint", d, "--seed", "the", "--length", 5, cwd=tmp_path))
    assert line.startswith("chargen: error: ") and CORRUPTIONS[case][1] in line
    assert not (tmp_path / "pwned").exists()


def test_run_whose_snapshots_are_gone(trained_run, tmp_path):
    run = tmp_path / "book"
    shutil.copytree(trained_run.run_dir, run, symlinks=True)
    shutil.rmtree(run / "snapshots")
    with pytest.raises(CheckpointError, match="no complete snapshot"):
        chargen.load(run)


@pytest.mark.parametrize("name, change, needle", [
    ("optimizer", _truncate("optimizer.safetensors", 0.5), "optimizer.safetensors: its arrays end at byte"),
    ("optimizer", _save_arrays("optimizer.safetensors", _without("output/bias/velocity")),
     "optimizer state is missing or does not fit"),
    ("train_state", _save_arrays("train_state.safetensors", _without("lstm_0/h")),
     "train_state.safetensors: no array named 'lstm_0/h'"),
    ("progress.json", _edit_json("progress.json", lambda p: p.update(partial=[1])), "progress.json: corrupted"),
])
def test_resuming_from_a_corrupted_snapshot_is_refused(trained_run, tmp_path, name, change, needle):
    shutil.copytree(trained_run.run_dir, tmp_path / "ck" / "book", symlinks=True)
    change(ckpt.snapshot_dir(tmp_path / "ck" / "book", "last"))
    with pytest.raises(CheckpointError, match=needle):
        chargen.train(trained_run.run_dir.parent.parent / "book.txt", root=tmp_path / "ck", resume=True,
                      epochs=3, progress=False)


# ------------------------------------------------------------------ 4. divergence

@pytest.mark.parametrize("fault, val_fraction", [("NaN loss", 0.1), ("NaN weights", 0.1), ("NaN weights", 0.0)])
def test_divergence_stops_and_keeps_the_last_good_snapshot(tmp_path, small_text, monkeypatch, fault, val_fraction):
    book = _book(tmp_path, small_text)
    ck, run = tmp_path / "ck", tmp_path / "ck" / "book"
    chargen.train(book, root=ck, epochs=1, seed=4, val_fraction=val_fraction, progress=False, **TINY)
    good, good_weights = ckpt.read_pointer(run, "last"), _weights(ckpt.snapshot_dir(run, "last"))
    real_compile = train_mod._Loop._compile

    def faulty_compile(self, tf):
        step, eval_step = real_compile(self, tf)
        calls = []

        def faulty(x, y):
            calls.append(1)
            loss = step(x, y)
            if fault == "NaN loss" and len(calls) == 3:
                return float("nan")
            if fault == "NaN weights" and len(calls) == self.streams.num_batches:  # the epoch's last step
                emb = self.model.get_layer("embedding").embeddings
                emb.assign(np.full(emb.shape, np.nan, np.float32))
            return loss
        return faulty, eval_step

    monkeypatch.setattr(train_mod._Loop, "_compile", faulty_compile)
    with pytest.raises(TrainingDiverged, match="training diverged") as err:
        chargen.train(book, root=ck, epochs=2, resume=True, progress=False)
    assert "NaN" in str(err.value) or "nan" in str(err.value)
    assert f"still names the last good snapshot ({good})" in str(err.value)
    assert ckpt.read_pointer(run, "last") == good
    assert sorted(os.listdir(run / "snapshots")) == [os.path.basename(good)]  # nothing written, nothing half-written
    for a, b in zip(good_weights, _weights(ckpt.snapshot_dir(run, "last"))):
        np.testing.assert_array_equal(a, b)
    chargen.load(run, which="last")
    monkeypatch.undo()
    assert [h["epoch"] for h in chargen.train(book, root=ck, epochs=2, resume=True, progress=False).history] == [1, 2]


def test_exploding_loss_at_the_command_line(tmp_path, small_text):
    _book(tmp_path, small_text)
    r = cli("train", "book.txt", "--lr", "1e30", "--clip", 0, "--epochs", 2, "--seed", 1, *TINY_FLAGS, cwd=tmp_path)
    line = runs.last_line(r.stderr, r.returncode, 2)  # after the log's first line, which says what was used
    assert "training diverged: the loss became" in line and "lower --lr" in line
    assert not (tmp_path / "checkpoints" / "book" / "last").exists()


# ------------------------------------------------------------------ 5. unwritable root, full disk

def _root_can_write(d):
    try:
        (d / ".probe").touch()
    except PermissionError:
        return False
    (d / ".probe").unlink()
    return True


@pytest.mark.parametrize("kind", ["read-only folder", "a file"])
def test_unwritable_root_fails_before_training_and_writes_nothing(tmp_path, small_text, monkeypatch, kind):
    book = _book(tmp_path, small_text)
    root = tmp_path / "root"
    if kind == "a file":
        root.write_text("not a folder\n")
    else:
        root.mkdir()
        root.chmod(0o500)
        if os.geteuid() == 0 and _root_can_write(root):
            root.chmod(0o700)
            pytest.skip("running as root: chmod 0o500 does not stop writes (the 'a file' case covers root)")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    try:
        def no_training(*a, **k):
            raise AssertionError("training started")

        monkeypatch.setattr(train_mod, "_Loop", no_training)
        monkeypatch.setattr(train_mod, "read_text", no_training)  # refused before the book is even read
        with pytest.raises(CheckpointError, match="choose another --root"):
            chargen.train(book, root=root, epochs=1, progress=False, **TINY)
        line = one_line(cli("train", "book.txt", "--root", "root", "--epochs", 1, *TINY_FLAGS, cwd=tmp_path))
        assert "cannot be created; choose another --root" in line
        assert sorted(p.name for p in tmp_path.rglob("*")) == before
    finally:
        if root.is_dir():
            root.chmod(0o700)


def test_full_disk_while_saving_keeps_the_previous_snapshot(tmp_path, small_text, monkeypatch):
    book = _book(tmp_path, small_text)
    from chargen.checkpoint import writing

    real_save, calls = writing.write_tensors, []

    def save(path, arrays, metadata):
        calls.append(path.name)
        if calls.count("model.safetensors") == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(path, arrays, metadata)

    monkeypatch.setattr(writing, "write_tensors", save)
    with pytest.raises(CheckpointError, match="could not write snapshot e0002-s000000 .No space left"):
        chargen.train(book, root=tmp_path / "ck", epochs=3, seed=1, progress=False, **TINY)
    run = tmp_path / "ck" / "book"
    assert ckpt.read_pointer(run, "last") == "snapshots/e0001-s000000"
    assert os.listdir(run / "snapshots") == ["e0001-s000000"]  # the half-written one is cleaned up
    monkeypatch.undo()
    assert len(chargen.train(book, root=tmp_path / "ck", resume=True, progress=False).history) == 3
