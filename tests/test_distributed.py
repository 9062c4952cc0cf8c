"""--distribute: R replicas, each owning B/R of the streams, train like one device.

Logical devices must be configured before TensorFlow initialises, so the mirrored runs happen
in one subprocess (the CPU split into 2 logical devices) that trains every run these tests
compare; the tests then read the checkpoints it wrote. All runs: TINY (B=4, so 2 streams per
replica), dropout 0, the same seed.

Tolerances: a distributed step sums each replica's share of the loss and gradients where one
device sums all rows at once, so float additions happen in another order (differences ~1e-7
per step). Adam then turns them into small weight differences that grow slowly over the ~170
steps of 2 epochs: at most 3.4e-6 in the weights and 1.2e-4 in a cell state of 7.7 (the c
state integrates every difference along its stream) were seen here. So: losses within 1e-5
(history.jsonl rounds them to 1e-6), weights within 1e-5 + 1e-5 relative, state within 1e-5
+ 1e-4 relative. A run whose replicas do not keep their own streams is off by far more
(checked below), so these tolerances cannot hide that.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import chargen
from chargen import checkpoint as ckpt
from chargen import distributed
from chargen.cli import main
from chargen.errors import ConfigError

from conftest import ROOT, TINY

# A constant rate: runs here stop after epoch 1 and resume to 2 for comparison with 2-epoch runs, and a
# cosine curve is re-planned when --epochs grows (tests/test_train.py covers resuming on the curve).
OPTS = dict(seed=3, dropout=0.0, lr_decay="none", **TINY)
FLAGS = ["--units", ",".join(map(str, TINY["units"])), "--embed", str(TINY["embed"]), "--batch-size",
         str(TINY["batch_size"]), "--seq-len", str(TINY["seq_len"]), "--seed", "3", "--dropout", "0", "--lr-decay", "none"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
ENV.pop("TF_CONFIG", None)

# Every run the tests compare, in one process with 2 logical CPU devices (2 replicas).
SCRIPT = r'''
import contextlib, io, json, shutil, sys
from pathlib import Path

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import chargen
from chargen import distributed
from chargen.cli import main

out, book = Path(sys.argv[1]), sys.argv[2]
opts, flags = json.loads(sys.argv[3]), json.loads(sys.argv[4])
result = {}

def copy(a, b):
    shutil.copytree(out / a, out / b, symlinks=True)

# one device: epoch 1, then epoch 2 on one device ("ref") or on 2 replicas ("n2d")
chargen.train(book, root=out / "ref", epochs=1, progress=False, **opts)
copy("ref", "n2d")
chargen.train(book, root=out / "ref", epochs=2, resume=True, progress=False)
chargen.train(book, root=out / "n2d", epochs=2, resume=True, progress=False, distribute="mirrored")

# 2 replicas from the command line: epoch 1, then epoch 2 on 2 replicas ("dist", --distribute kept
# from the checkpoint) or on one device ("d2n")
result["cli_rc"] = main(["train", book, "--root", str(out / "dist"), "--epochs", "1", "--distribute", "mirrored",
                         "--quiet", *flags])
copy("dist", "d2n")
copy("dist", "dist1")
lines = []
chargen.train(book, root=out / "dist", epochs=2, resume=True, progress=False, log=lines.append)
result["log"] = lines
chargen.train(book, root=out / "d2n", epochs=2, resume=True, progress=False, distribute="none")

# broken on purpose: the replicas trade streams every other batch, so each one's state meets
# text from another stream; the comparisons must notice it
real_step = distributed.Engine.train_step
def trading(self, *args):
    step, calls = real_step(self, *args), [0]
    def traded(x, y):
        calls[0] += 1
        if calls[0] % 2 == 0:
            x, y = np.roll(x, self.rows, axis=0), np.roll(y, self.rows, axis=0)
        return step(x, y)
    return traded
distributed.Engine.train_step = trading
chargen.train(book, root=out / "broken", epochs=1, progress=False, distribute="mirrored", **opts)
distributed.Engine.train_step = real_step

# with dropout: each replica draws its own masks, and a run on 2 replicas still resumes exactly
dropout = {**opts, "dropout": 0.2, "distribute": "mirrored"}
chargen.train(book, root=out / "drop", epochs=2, progress=False, **dropout)
chargen.train(book, root=out / "drop_resumed", epochs=1, progress=False, **dropout)
chargen.train(book, root=out / "drop_resumed", epochs=2, resume=True, progress=False)
engine = distributed.Engine("mirrored", 4)
model, _ = engine.build(chargen.ModelConfig(vocab_size=5, embed=2, units=(3,), dropout=0.5),
                        chargen.TrainConfig(seq_len=4), "fast")
seeds = engine.strategy.experimental_local_results(distributed.rng_vars(model)[0].value)
result["replica_seeds"] = [s.numpy().tolist() for s in seeds]

# bf16 (--precision bf16) on one device and on 2 replicas
chargen.train(book, root=out / "bf16_one", epochs=1, progress=False, precision="bf16", **opts)
chargen.train(book, root=out / "bf16_two", epochs=1, progress=False, precision="bf16", distribute="mirrored", **opts)

# a GRU: 2 epochs on one device; epoch 1 on 2 replicas, then resumed on 2 replicas (its state scattered back)
gru = {**opts, "cell": "gru"}
chargen.train(book, root=out / "gru_ref", epochs=2, progress=False, **gru)
chargen.train(book, root=out / "gru_dist", epochs=1, progress=False, distribute="mirrored", **gru)
chargen.train(book, root=out / "gru_dist", epochs=2, resume=True, progress=False)

# a batch the replicas cannot share evenly
err = io.StringIO()
with contextlib.redirect_stderr(err):
    bad = [f if f != "4" else "3" for f in flags]  # --batch-size 3
    result["odd_rc"] = main(["train", book, "--root", str(out / "odd"), "--distribute", "mirrored", *bad])
result["odd_err"] = err.getvalue()
(out / "result.json").write_text(json.dumps(result))
'''


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_text):
    d = tmp_path_factory.mktemp("distributed")
    book = d / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(d), str(book), json.dumps(OPTS), json.dumps(FLAGS)],
                       env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return d, json.loads((d / "result.json").read_text())


def _history(run):
    return [json.loads(s) for s in (ckpt.snapshot_dir(run, "last") / "history.jsonl").read_text().splitlines()]


def _last_config(run):
    return json.loads((ckpt.snapshot_dir(run, "last") / "config.json").read_text())


def _arrays(run, name):
    arrays = ckpt.read_tensors(ckpt.snapshot_dir(run, "last") / name)
    return [arrays[k] for k in sorted(arrays)]


def _assert_same_run(a, b, epochs=2):
    """b trained like a: per-epoch losses, final weights and the training rows' state."""
    ha, hb = _history(a), _history(b)
    assert [h["epoch"] for h in ha] == [h["epoch"] for h in hb] == list(range(1, epochs + 1))
    for key in ("train_loss", "val_loss"):
        np.testing.assert_allclose([h[key] for h in hb], [h[key] for h in ha], rtol=0, atol=1e-5, err_msg=key)
    for x, y in zip(_arrays(a, "model.safetensors"), _arrays(b, "model.safetensors"), strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)
    for x, y in zip(_arrays(a, "train_state.safetensors"), _arrays(b, "train_state.safetensors"), strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-5)


def _largest_difference(a, b, name):
    return max(float(np.abs(x - y).max()) for x, y in zip(_arrays(a, name), _arrays(b, name), strict=True))


def test_two_replicas_train_like_one_device(runs):
    d, result = runs
    assert result["cli_rc"] == 0
    assert result["log"][0] == ("distributed training (mirrored): 2 replicas, 2 of the 4 streams each; "
                                "/device:CPU:0, /device:CPU:1")
    assert _last_config(d / "dist" / "book")["train"]["distribute"] == "mirrored"
    _assert_same_run(d / "ref" / "book", d / "dist" / "book")
    # and it is not trivially so: training changed the weights, and the state is far from zero
    assert _history(d / "ref" / "book")[1]["train_loss"] < _history(d / "ref" / "book")[0]["train_loss"]
    assert all(np.abs(a).max() > 0.1 for a in _arrays(d / "dist" / "book", "train_state.safetensors"))


def test_the_saved_state_is_every_stream_in_order(runs):
    d, _ = runs
    state = _arrays(d / "dist" / "book", "train_state.safetensors")
    assert [a.shape for a in state] == [(4, 24), (4, 24), (4, 16), (4, 16)]  # (h, c) per layer, all B rows
    # the two replicas' rows hold different streams' states (not one replica's copied, not averaged)
    for a in state:
        assert np.abs(a[:2] - a[2:]).max() > 1e-2


def test_replicas_that_trade_streams_are_caught(runs):
    d, _ = runs
    good, broken = d / "dist1" / "book", d / "broken" / "book"  # one epoch each, on 2 replicas
    assert abs(_history(broken)[0]["train_loss"] - _history(good)[0]["train_loss"]) > 1e-4  # 10x the tolerance
    assert _largest_difference(good, broken, "model.safetensors") > 1e-3
    assert _largest_difference(good, broken, "train_state.safetensors") > 1e-2
    with pytest.raises(AssertionError):
        _assert_same_run(good, broken, epochs=1)


@pytest.mark.parametrize("run", ["n2d", "d2n"])
def test_resume_with_and_without_distribute(runs, run):
    d, _ = runs
    _assert_same_run(d / "ref" / "book", d / run / "book")
    expected = "mirrored" if run == "n2d" else "none"  # the resumed run's own setting is recorded
    assert _last_config(d / run / "book")["train"]["distribute"] == expected


def test_a_batch_the_replicas_cannot_share_is_refused(runs):
    d, result = runs
    assert result["odd_rc"] == 2
    line = result["odd_err"].strip()
    assert line.count("\n") == 0 and "Traceback" not in line
    assert "--batch-size 3 cannot be split evenly over 2 replicas" in line and "--batch-size 4" in line
    assert not (d / "odd").exists()  # refused before anything was written


def test_with_dropout_each_replica_draws_its_own_masks_and_resumes_exactly(runs):
    d, result = runs
    (s0, n0), (s1, n1) = result["replica_seeds"]
    assert n0 == n1 == 0 and s1 - s0 == distributed.RNG_STRIDE
    straight, resumed = d / "drop" / "book", d / "drop_resumed" / "book"
    losses = [[(h["train_loss"], h["val_loss"]) for h in _history(run)] for run in (straight, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) == 2
    for name in ("model.safetensors", "train_state.safetensors"):  # the RNG states included
        for x, y in zip(_arrays(straight, name), _arrays(resumed, name), strict=True):
            np.testing.assert_array_equal(x, y)
    assert _history(straight)[0]["train_loss"] != _history(d / "ref" / "book")[0]["train_loss"]  # dropout was on


def test_bf16_on_two_replicas_trains_like_bf16_on_one_device(runs):
    """bf16 rounds each product's operands, so the replicas' float-order differences (~1e-7) can flip a
    rounding now and then: the runs agree within bf16's noise, not fp32's, and differ from fp32 by more."""
    d, _ = runs
    one, two, fp32 = d / "bf16_one" / "book", d / "bf16_two" / "book", d / "dist1" / "book"
    assert [_last_config(r)["train"]["precision"] for r in (one, two)] == ["bf16"] * 2
    (a,), (b,), (c,) = (_history(r) for r in (one, two, fp32))
    assert abs(a["train_loss"] - b["train_loss"]) < 1e-3 and abs(a["val_loss"] - b["val_loss"]) < 1e-3
    assert a["train_loss"] != c["train_loss"]
    assert _largest_difference(one, two, "model.safetensors") < 1e-2
    state = _arrays(two, "train_state.safetensors")
    assert [x.shape for x in state] == [(4, 24), (4, 24), (4, 16), (4, 16)]  # every stream, from both replicas
    for x, y in zip(_arrays(one, "train_state.safetensors"), state, strict=True):
        np.testing.assert_allclose(y, x, atol=5e-2)


def test_a_gru_on_two_replicas_trains_and_resumes_like_one_device(runs):
    """The GRU's state (h alone) is per replica, gathered into train_state.safetensors in stream order and scattered
    back on resume, as the LSTM's (h, c) is."""
    d, _ = runs
    one, two = d / "gru_ref" / "book", d / "gru_dist" / "book"
    assert _last_config(two)["model"]["cell"] == "gru"
    _assert_same_run(one, two)
    state = _arrays(two, "train_state.safetensors")
    assert [a.shape for a in state] == [(4, 24), (4, 16)]  # h per layer, all B rows
    for a in state:  # each replica's rows hold its own streams' states
        assert np.abs(a[:2] - a[2:]).max() > 1e-2


# ------------------------------------------------------------------ multiworker

def test_multiworker_needs_tf_config(tmp_path, small_text, monkeypatch, capsys):
    book = tmp_path / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="needs TF_CONFIG"):
        chargen.train(book, root=tmp_path / "ck", distribute="multiworker", progress=False, **TINY)
    assert main(["train", str(book), "--root", str(tmp_path / "ck"), "--distribute", "multiworker"]) == 2
    assert "needs TF_CONFIG" in capsys.readouterr().err
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="is not a cluster description"):
        chargen.train(book, root=tmp_path / "ck", distribute="multiworker", progress=False, **TINY)
    for bad in (_tf_config([1, 2], 2), json.dumps({"cluster": {"worker": ["h:1"]}, "task": {"type": "worker"}})):
        monkeypatch.setenv("TF_CONFIG", bad)
        with pytest.raises(ConfigError, match="is not a cluster description"):
            distributed.tf_config_task()
    assert not (tmp_path / "ck").exists()
    with pytest.raises(ConfigError, match="^distribute must be one of none, mirrored, multiworker, got 'gpu'"):
        chargen.train(book, root=tmp_path / "ck", distribute="gpu", progress=False, **TINY)


def _tf_config(ports, index, kind="worker"):
    return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": kind, "index": index}})


def test_each_worker_writes_its_own_copy(tmp_path, monkeypatch):
    run = tmp_path / "book"
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2], 0))
    assert distributed.worker_run_dir(run, "multiworker", False) == run  # worker 0 is the chief
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2], 1))
    assert distributed.worker_run_dir(run, "multiworker", False) == tmp_path / "book-worker1"
    assert distributed.worker_run_dir(run, None, True) == run  # resumed without the flag: no copy of its own yet
    (tmp_path / "book-worker1" / "last").mkdir(parents=True)
    assert distributed.worker_run_dir(run, None, True) == tmp_path / "book-worker1"
    assert distributed.worker_run_dir(run, "none", True) == run


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_on_localhost_train_like_one_device(runs):
    """Two processes, one CPU each, talking over localhost: ~30-50 s, most of it starting TensorFlow twice."""
    d, _ = runs
    ports = _free_ports(2)
    args = ["-m", "chargen", "train", str(d / "book.txt"), "--root", str(d / "mw"), "--epochs", "2",
            "--distribute", "multiworker", "--quiet", *FLAGS]
    procs = [subprocess.Popen([sys.executable, *args], env={**ENV, "TF_CONFIG": _tf_config(ports, i)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    for run in ("book", "book-worker1"):  # the chief's folder, and worker 1's own copy beside it
        _assert_same_run(d / "ref" / "book", d / "mw" / run)
