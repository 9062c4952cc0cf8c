"""Epoch-end callbacks: --sample-every and --tensorboard, from the CLI and the library.

The point to prove: a sample or a log costs nothing but time. Training with them gives the
same losses and weights, bit for bit, as training without them.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import chargen
from chargen import checkpoint as ckpt
from chargen.callbacks import (SampleEvery, TensorBoard, TensorBoardError, epoch_sample, from_markdown,
                               sample_rng_seed)
from chargen.errors import ConfigError
from chargen.loop import EpochEnd

from conftest import ROOT, TINY

TINY_FLAGS = ["--units", ",".join(map(str, TINY["units"])), "--embed", TINY["embed"],
              "--batch-size", TINY["batch_size"], "--seq-len", TINY["seq_len"]]


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "chargen", *map(str, args)], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)


def _book(tmp_path, text):
    book = tmp_path / "book.txt"
    book.write_text(text, encoding="utf-8")
    return book


def _weights(run_dir):
    return ckpt.open_snapshot(run_dir, "last").weights


def _events(folder):
    """(step, tag) -> value for every summary in a TensorBoard folder's event files."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    found = {}
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert files, f"no event file in {folder}"
    for f in files:
        for raw in tf.data.TFRecordDataset(str(f)):
            event = event_pb2.Event.FromString(raw.numpy())
            for v in event.summary.value:
                found[event.step, v.tag] = (v.metadata.plugin_data.plugin_name, tf.make_ndarray(v.tensor))
    return found


def _info_from_snapshot(run_dir, epoch):
    """An EpochEnd as the loop would have made it for the weights in `last`."""
    snap = ckpt.read_snapshot(ckpt.snapshot_dir(run_dir, "last"), with_training=False)
    return EpochEnd(epoch, snap.history[epoch - 1], run_dir, snap.model, snap.train, snap.tokenizer,
                    lambda: [w.copy() for w in snap.weights], False)


def test_cli_samples_every_n_epochs_even_when_quiet_and_training_is_unchanged(tmp_path, small_text):
    _book(tmp_path, small_text)
    r = cli("train", "book.txt", "--root", "a", "--epochs", 4, "--seed", 2, "--dropout", 0.1, *TINY_FLAGS,
            "--sample-every", 2, "--sample-length", 30, "--tensorboard", "tb", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # --quiet drops the epoch lines, not the samples the user asked for: epochs 2 and 4 only
    lines = r.stderr.split("\n")
    headers = [i for i, line in enumerate(lines) if line.startswith("--- sample")]
    assert [lines[i] for i in headers] == ["--- sample after epoch 2 ---", "--- sample after epoch 4 ---"]
    samples = ["\n".join(lines[h + 1:(headers + [len(lines) - 1])[k + 1]]) for k, h in enumerate(headers)]
    assert [len(s) for s in samples] == [30, 30]
    assert samples[0] != samples[1]
    assert len(_events(tmp_path / "tb" / "book" / "train")) == 4 * 5  # 4 scalars + a sample, per epoch

    # the same seed without callbacks: the same losses and weights, bit for bit
    plain = chargen.train(tmp_path / "book.txt", root=tmp_path / "b", epochs=4, seed=2, dropout=0.1, progress=False, **TINY)
    with_cb = chargen.history("book", root=tmp_path / "a")
    for key in ("train_loss", "val_loss", "lr"):
        assert [h[key] for h in with_cb] == [h[key] for h in plain.history], key
    ours, theirs = _weights(tmp_path / "a" / "book"), _weights(plain.run_dir)
    assert len(ours) == len(theirs) == 1 + 3 * len(TINY["units"]) + 2  # embedding, 3 per LSTM layer, dense
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)

    # a sample depends only on the weights, the run's seed and the epoch: made again here, it is the same text
    assert epoch_sample(_info_from_snapshot(plain.run_dir, 4), 30) == samples[1]


def test_tensorboard_logs_equal_history_and_hold_a_sample_per_epoch(tmp_path, small_text):
    book = _book(tmp_path, small_text)
    seen = []
    board = TensorBoard(tmp_path / "logs", sample_length=25, seed_text="the ")
    result = chargen.train(book, root=tmp_path / "ck", name="run", epochs=2, seed=4, progress=False,
                           callbacks=[board, SampleEvery(1, 25, seed_text="the ", write=lambda e, s: seen.append((e, s)))],
                           **TINY)
    board.close()
    train = _events(tmp_path / "logs" / "run" / "train")
    val = _events(tmp_path / "logs" / "run" / "validation")
    assert [e for e, _ in seen] == [1, 2]
    for h, (_, text) in zip(result.history, seen):
        step = h["epoch"]
        for tag, key in (("loss", "train_loss"), ("bpc", "train_bpc"), ("chars_per_sec", "chars_per_sec"), ("lr", "lr")):
            plugin, value = train[step, tag]
            assert plugin == "scalars" and value.dtype == np.float32
            assert value == np.float32(h[key]), (tag, value, h[key])
        for tag, key in (("loss", "val_loss"), ("bpc", "val_bpc")):
            assert val[step, tag][1] == np.float32(h[key])
        plugin, sample = train[step, "sample"]
        assert plugin == "text"
        # the same text SampleEvery printed: same derivation of the sampling seed
        assert from_markdown(sample.item().decode("utf-8")) == text
        assert text.startswith("the ") and len(text) == 4 + 25
    assert seen[0][1] != seen[1][1]
    assert sorted({tag for _, tag in train}) == ["bpc", "chars_per_sec", "loss", "lr", "sample"]
    assert sorted({step for step, _ in train}) == [1, 2]


def test_sampling_seed_is_derived_from_the_run_seed_and_epoch():
    seeds = {sample_rng_seed(s, e) for s in (1, 2) for e in (1, 2, 3)}
    assert len(seeds) == 6  # every (seed, epoch) gets its own stream
    assert sample_rng_seed(1, 3) == sample_rng_seed(1, 3)
    assert sample_rng_seed(1, 3, rng_seed=9) == sample_rng_seed(9, 3) != sample_rng_seed(1, 3)


@pytest.mark.parametrize("make, needle", [
    (lambda d: SampleEvery(0), "--sample-every must be a positive integer"),
    (lambda d: SampleEvery(1.5), "--sample-every must be a positive integer"),
    (lambda d: SampleEvery(True), "--sample-every must be a positive integer"),
    (lambda d: SampleEvery(2, length=0), "sample_length must be a positive integer"),
    (lambda d: SampleEvery(2, temperature=-1), "temperature must be >= 0"),
    (lambda d: TensorBoard(d, sample_length=-5), "sample_length must be a positive integer"),
    (lambda d: TensorBoard(d / "a-file" / "logs"), "exists and is not a folder"),
])
def test_bad_callback_options_are_refused_at_once(tmp_path, make, needle):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises((ConfigError, TensorBoardError), match=needle.replace("(", r"\(")):
        make(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing was created


@pytest.mark.parametrize("args, needle", [
    (["--sample-every", "0"], "--sample-every must be a positive integer (epochs), got 0"),
    (["--sample-every", "-2"], "--sample-every must be a positive integer (epochs), got -2"),
    (["--sample-every", "1", "--sample-length", "0"], "--sample-length must be a positive integer, got 0"),
    (["--sample-length", "50"], "--sample-length 50 needs --sample-every N or --tensorboard DIR"),
    (["--tensorboard", "a-file/logs"], "--tensorboard a-file/logs: a-file exists and is not a folder"),
])
def test_bad_flags_fail_before_training_with_one_line(tmp_path, small_text, args, needle):
    _book(tmp_path, small_text)
    (tmp_path / "a-file").write_text("x")
    r = cli("train", "book.txt", "--epochs", 1, *TINY_FLAGS, *args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "book.txt"]  # no checkpoints, no logs


def test_a_log_folder_that_cannot_be_written_stops_with_a_clear_error(tmp_path, small_text):
    book = _book(tmp_path, small_text)
    board = TensorBoard(tmp_path / "logs", sample_length=0)
    (tmp_path / "logs").write_text("in the way")  # appears after the check: the first write fails
    with pytest.raises(TensorBoardError, match="could not write TensorBoard logs.*epoch 1 was saved.*--resume"):
        chargen.train(book, root=tmp_path / "ck", epochs=2, seed=1, progress=False, callbacks=[board], **TINY)
    assert (tmp_path / "ck" / "book" / "last").exists()  # the epoch before the failure is kept
