"""The command line as a user runs it: real subprocesses, exit codes, one-line errors."""

import os
import subprocess
import sys

import pytest

from chargen import checkpoint as ckpt
from conftest import ROOT, TINY


def chargen(*args, cwd=None, input=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "chargen", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, input=input, timeout=600)


def _tiny_flags():
    return ["--units", ",".join(map(str, TINY["units"])), "--embed", TINY["embed"],
            "--batch-size", TINY["batch_size"], "--seq-len", TINY["seq_len"]]


def test_help_is_fast_and_lists_commands():
    r = chargen("--help")
    assert r.returncode == 0 and "train" in r.stdout and "sample" in r.stdout
    probe = subprocess.run([sys.executable, "-c", "import sys, chargen.cli; print('tensorflow' in sys.modules)"],
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert probe.stdout.strip() == "False"  # TensorFlow is imported lazily


def test_train_then_sample(tmp_path, small_text):
    book = tmp_path / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    r = chargen("train", book, "--epochs", 1, "--seed", 1, "--quiet", *_tiny_flags(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # --quiet, and no TensorFlow chatter
    assert (ckpt.snapshot_dir(tmp_path / "checkpoints" / "book", "last") / "model.safetensors").exists()
    r = chargen("sample", "--seed", "the ", "--length", 50, "--rng-seed", 3, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.rstrip("\n")
    assert len(out) == 50
    again = chargen("sample", "--seed", "the ", "--length", 50, "--rng-seed", 3, "--echo-seed", cwd=tmp_path)
    assert again.stdout.rstrip("\n") == "the " + out  # same seed, same text
    many = chargen("sample", "--seed", "the ", "--length", 20, "--num-samples", 3, "--rng-seed", 1, cwd=tmp_path)
    assert many.returncode == 0, many.stderr
    lines = many.stdout.splitlines()
    assert [l for l in lines if l.startswith("--- sample")] == [f"--- sample {i} ---" for i in (1, 2, 3)]


@pytest.mark.parametrize("args, needle", [
    (["train", "missing.txt"], "no such file"),
    (["train", "empty.txt"], "empty"),
    (["train", "bin.txt"], "byte offset"),
    (["train", "short.txt"], "lower --batch-size or --seq-len"),
    (["train", "short.txt", "--batch-size", "0"], "--batch-size must be a positive integer"),
    (["train", "short.txt", "--dropout", "1"], "--dropout must be in [0, 1)"),
    (["train", "short.txt", "--val-fraction", "0.7"], "--val-fraction must be in [0, 0.5]"),
    (["train", "short.txt", "--units", "a,b"], "--units must be integers"),
    (["train", "short.txt", "--name", "../x"], "plain folder name"),
    (["sample", "--seed", "K"], "no checkpoints"),
    (["sample", "--checkpoint", "nope"], "no checkpoint named 'nope'"),
    (["sample", "--temperature", "-1"], "--temperature must be >= 0"),
    (["sample", "--top-p", "0"], "--top-p must be in (0, 1]"),
    (["train", "short.txt", "--epochs", "0"], "--epochs must be a positive integer"),
    (["train", "short.txt", "--epochs", "-1"], "--epochs must be a positive integer"),
    (["train", "short.txt", "--units", "0"], "--units must be a list of positive integers"),
    (["train", "short.txt", "--units", "24,-3"], "--units must be a list of positive integers"),
    (["train", "short.txt", "--seq-len", "0"], "--seq-len must be a positive integer"),
    (["train", "short.txt", "--batch-size", "-1"], "--batch-size must be a positive integer"),
    (["train", "short.txt", "--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["train", "short.txt", "--val-fraction", "0.51"], "--val-fraction must be in [0, 0.5]"),
    (["sample", "--length", "-1"], "--length must be an integer >= 0"),
    (["sample", "--top-k", "-1"], "--top-k must be an integer >= 0"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "bin.txt").write_bytes(b"ab\xff\xfe\x00")
    (tmp_path / "short.txt").write_text("too short for a batch\n")
    r = chargen(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in lines[0]
    assert not (tmp_path / "checkpoints").exists()  # a refused command writes nothing
