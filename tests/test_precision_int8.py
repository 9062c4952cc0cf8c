"""--precision int8 for sampling and evaluation: chargen/quantized.py's LiteRT engine.

int8 is close to fp32, not equal, so it is compared with tolerances; fp32 stays the exact
reference (the equivalence tests elsewhere are unchanged and run fp32).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import chargen
from cells import CELLS
from chargen import checkpoint as ckpt
from chargen.errors import ConfigError
from chargen.net.numpy_engine import NumpyEngine
from chargen.quantized import Int8Engine, cache_dir, weights_key

from conftest import ROOT


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("CHARGEN_CACHE", str(folder))
    return folder


def _snap(run):
    return ckpt.read_snapshot(ckpt.snapshot_dir(run.run_dir, "best"), with_training=False)


@pytest.fixture(scope="module")
def snap(trained_run):
    return _snap(trained_run)


def _softmax(z):
    z = z.astype(np.float64) - z.max(axis=-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("cell", CELLS)
def test_same_step_interface_as_the_numpy_engine_pure_and_close(trained_runs, cell, cache):
    snap = _snap(trained_runs(cell))
    units = snap.model.units
    engine = Int8Engine.from_weights(snap.model, snap.weights)
    reference = NumpyEngine.from_weights(snap.model, snap.weights)
    rng = np.random.default_rng(0)
    rows = 5
    state = [tuple(rng.normal(0, 0.5, (rows, u)).astype(np.float32) for _ in engine.cell.state) for u in units]
    before = [tuple(a.copy() for a in layer) for layer in state]
    ids = rng.integers(0, snap.model.vocab_size, rows)
    logits, new = engine.step(ids, state)
    want, want_state = reference.step(ids, state)
    assert logits.shape == (rows, snap.model.vocab_size) and logits.dtype == np.float32
    assert [tuple(a.shape for a in layer) for layer in new] == [tuple(a.shape for a in layer) for layer in state]
    for layer, layer_before in zip(state, before):  # pure: the given state is untouched
        for a, b in zip(layer, layer_before):
            np.testing.assert_array_equal(a, b)
    assert 0 < np.abs(_softmax(logits) - _softmax(want)).max() < 0.05  # int8 really, and close
    for layer, layer_want in zip(new, want_state):
        for k, (a, b) in enumerate(zip(layer, layer_want)):
            assert np.abs(a - b).max() < (0.05 if k == 0 else 0.1)  # h, then the LSTM's c (it integrates)
    # a row's result does not depend on the other rows (activations are quantized per row)
    one, _ = engine.step(ids[2:3], [tuple(a[2:3] for a in layer) for layer in state])
    np.testing.assert_array_equal(one[0], logits[2])


def test_converted_once_then_cached_by_weights_and_a_damaged_cache_is_replaced(snap, cache):
    Int8Engine.from_weights(snap.model, snap.weights)
    path = cache_dir() / "int8" / f"{weights_key(snap.weights, snap.model)}.tflite"
    assert cache_dir() == cache and path.is_file()
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary files left behind
    stamp = path.stat().st_mtime_ns, path.stat().st_ino
    cached = Int8Engine.from_weights(snap.model, snap.weights)
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp  # read, not written again
    assert cached.model == path.read_bytes()
    other = [w * 0.5 for w in snap.weights]  # other weights: another key, another file
    Int8Engine.from_weights(snap.model, other)
    assert len(list(path.parent.glob("*.tflite"))) == 2
    path.write_bytes(b"not a model")
    repaired = Int8Engine.from_weights(snap.model, snap.weights)
    assert path.read_bytes() == repaired.model != b"not a model"


def test_an_unwritable_cache_costs_only_the_conversion(snap, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("CHARGEN_CACHE", str(blocker))  # a file where the folder should be
    engine = Int8Engine.from_weights(snap.model, snap.weights)
    assert engine.step(np.array([1]), engine.zero_state(1))[0].shape[0] == 1
    assert "could not cache the int8 model" in capsys.readouterr().err


def test_generator_int8_streams_reproducibly_and_fp32_stays_the_default(trained_run, cache):
    fp32 = chargen.load(trained_run.run_dir)
    assert fp32.precision == "fp32"
    int8 = chargen.load(trained_run.run_dir, precision="int8")
    again = chargen.load(trained_run.run_dir, precision="int8")
    a = int8.generate("the ", 120, temperature=0.8, rng_seed=3)
    assert a == again.generate("the ", 120, temperature=0.8, rng_seed=3)  # same seed, same text
    assert a != int8.generate("the ", 120, temperature=0.8, rng_seed=4)
    assert len(a) == 120
    int8.reset(), again.reset()  # generate() moved each one's state on with its text
    many = list(int8.stream_many("the ", num_samples=4, length=30, temperature=0.8, rng_seed=5))
    assert many == list(again.stream_many("the ", num_samples=4, length=30, temperature=0.8, rng_seed=5))
    assert len(many) == 30 and all(len(step) == 4 for step in many)
    # greedy text agrees with fp32's for a while on this small model
    int8.reset()
    assert int8.generate("the ", 20, temperature=0)[:5] == fp32.generate("the ", 20, temperature=0)[:5]
    with pytest.raises(ConfigError, match="^precision must be one of fp32, int8"):
        chargen.load(trained_run.run_dir, precision="int4")


def test_evaluate_int8_is_close_to_fp32(trained_run, small_text, cache):
    text = small_text[-1500:]
    fp32 = chargen.evaluate(text, trained_run.run_dir, batch_size=4, seq_len=32, compressors=False)
    int8 = chargen.evaluate(text, trained_run.run_dir, batch_size=4, seq_len=32, compressors=False, precision="int8")
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    assert (int8.rows, int8.characters, int8.tokens) == (fp32.rows, fp32.characters, fp32.tokens)
    assert 0 < abs(int8.bits_per_char - fp32.bits_per_char) < 0.02
    with pytest.raises(ConfigError, match="^precision must be one of fp32, int8"):
        chargen.evaluate(text, trained_run.run_dir, precision="bf16")


def _cli(*args, cache):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CHARGEN_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "chargen", *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_sample_and_eval_with_int8(trained_run, small_text, tmp_path, cache):
    root, name = str(trained_run.run_dir.parent), trained_run.run_dir.name
    runs = [_cli("sample", "--root", root, "--checkpoint", name, "--seed", "the ", "--length", "60", "--rng-seed", "2",
                 "--precision", "int8", cache=cache) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    assert runs[0].stdout == runs[1].stdout and len(runs[0].stdout) == 61  # 60 characters and a newline
    assert runs[0].stderr == ""  # the converter's and LiteRT's native logging is kept off the terminal
    book = tmp_path / "held_out.txt"
    book.write_text(small_text[-1500:], encoding="utf-8")
    out = _cli("eval", str(book), "--root", root, "--checkpoint", name, "--precision", "int8", "--json", "--quiet",
               cache=cache)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["precision"] == "int8"
    bad = _cli("sample", "--root", root, "--checkpoint", name, "--precision", "int4", cache=cache)
    assert bad.returncode == 2 and "--precision" in bad.stderr and "Traceback" not in bad.stderr
