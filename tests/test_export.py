"""`chargen export`: a single-step model with explicit state that streams exactly like the Generator."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import chargen
from cells import CELLS
from chargen.errors import ConfigError, ExportError
from conftest import ROOT

FORMATS = ("savedmodel", "tflite")


def _softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _load_step(folder, fmt):
    if fmt == "tflite":
        from chargen.exporters.tflite import load_tflite_step

        return load_tflite_step(folder / "model.tflite")
    import tensorflow as tf

    return tf.saved_model.load(str(folder)).signatures["serving_default"]


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cell", CELLS)
def test_export_streams_like_the_generator(trained_runs, small_text, tmp_path, cell, fmt):
    trained_run = trained_runs(cell)
    out = chargen.export(trained_run.run_dir, out=tmp_path / "exp", format=fmt, which="last")
    assert out == tmp_path / "exp" and _leftovers(tmp_path) == []
    gen = chargen.load(trained_run.run_dir, which="last")
    snap = gen.source
    assert (out / "tokenizer.json").read_bytes() == (snap / "tokenizer.json").read_bytes()
    manifest = json.loads((out / "chargen_export.json").read_text(encoding="utf-8"))
    assert manifest["format"] == "chargen-export" and manifest["model_format"] == fmt
    assert manifest["units"] == list(gen.config.units) and manifest["chars"] == gen.tokenizer.chars
    assert manifest["cell"] == cell
    assert manifest["state"] == {"lstm": [["h0", "c0"], ["h1", "c1"]], "gru": [["h0"], ["h1"]]}[cell]

    step = _load_step(out, fmt)
    feed = {n: np.zeros(spec["shape"], np.float32) for n, spec in manifest["inputs"].items() if n != "token"}
    text = small_text[:30]
    gen.reset()
    for ch in text:
        token = gen.tokenizer.encode(ch).astype(np.int32)
        got = {k: np.asarray(v) for k, v in step(token=token, **feed).items()}
        want = _softmax(gen.prime(ch))  # the Keras batch-1 model, state carried by the Generator
        np.testing.assert_allclose(got["probs"][0], want, atol=1e-5)
        np.testing.assert_allclose(_softmax(got["logits"][0]), want, atol=1e-5)
        feed = {n: got[n] for names in manifest["state"] for n in names}  # outputs back in as inputs
    for arrays, names in zip(gen.state, manifest["state"]):
        for a, n in zip(arrays, names, strict=True):
            np.testing.assert_allclose(feed[n], a, atol=1e-5)
    assert sorted(manifest["outputs"]) == sorted(got)


def test_default_folder_and_overwrite(trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = chargen.export(trained_run.run_dir, format="savedmodel")
    assert out == tmp_path.joinpath("exports", f"{trained_run.run_dir.name}-savedmodel").relative_to(tmp_path)
    marker = out / "chargen_export.json"
    before = marker.read_bytes()
    with pytest.raises(ExportError, match="already exists.*--overwrite"):
        chargen.export(trained_run.run_dir, out=out)
    assert marker.read_bytes() == before
    (out / "stale.txt").write_text("old", encoding="utf-8")
    assert chargen.export(trained_run.run_dir, out=out, overwrite=True) == out
    assert not (out / "stale.txt").exists() and marker.exists() and _leftovers(out.parent) == []
    # --overwrite replaces only a previous export, never an unrelated folder
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ExportError, match="not a chargen export"):
        chargen.export(trained_run.run_dir, out=other, overwrite=True)
    assert (other / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_failure_while_writing_leaves_nothing(trained_run, tmp_path, monkeypatch):
    import tensorflow as tf

    def broken_convert(self):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "convert", broken_convert)
    with pytest.raises(RuntimeError, match="converter exploded"):
        chargen.export(trained_run.run_dir, out=tmp_path / "exp", format="tflite")
    assert list(tmp_path.iterdir()) == []

    def disk_full(*args, **kwargs):  # how TensorFlow's file layer reports ENOSPC
        raise tf.errors.ResourceExhaustedError(None, None, "model/variables: No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", disk_full)
    with pytest.raises(ExportError, match="No space left.*nothing was written"):
        chargen.export(trained_run.run_dir, out=tmp_path / "exp", format="savedmodel")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_previous_export(trained_run, tmp_path, monkeypatch):
    import tensorflow as tf

    out = chargen.export(trained_run.run_dir, out=tmp_path / "exp", format="tflite")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(tf.lite.TFLiteConverter, "convert", lambda self: b"not a flatbuffer")
    with pytest.raises(ValueError):  # loading it back for the check after writing fails
        chargen.export(trained_run.run_dir, out=out, format="tflite", overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == []


def test_bad_options_and_the_public_name(trained_run, tmp_path):
    import chargen.exporters.keras  # noqa: F401  the package and its modules must not shadow the function

    assert callable(chargen.export) and chargen.export is chargen.exporters.export
    with pytest.raises(ConfigError, match="'onnx'"):
        chargen.export(trained_run.run_dir, out=tmp_path / "x", format="onnx")
    with pytest.raises(ConfigError, match="'worst'"):
        chargen.export(trained_run.run_dir, out=tmp_path / "x", which="worst")
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(ExportError, match="not a folder"):
        chargen.export(trained_run.run_dir, out=tmp_path / "file", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_cli_export_then_refuse_to_overwrite(trained_run, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "chargen", "export", *map(str, a)],  # noqa: E731
                                    cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    root, name = trained_run.run_dir.parent, trained_run.run_dir.name
    r = run(name, "--root", root, "--format", "tflite")
    out = tmp_path / "exports" / f"{name}-tflite"
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # no converter or interpreter chatter
    assert str(out.relative_to(tmp_path)) in r.stdout and (out / "model.tflite").is_file()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = run(name, "--root", root, "--format", "tflite")
    assert r.returncode == 2
    assert r.stderr.startswith("chargen: error:") and "already exists" in r.stderr and r.stderr.count("\n") == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_bpe_run_exports_its_token_texts(tmp_path, small_text):
    from conftest import TINY

    book = tmp_path / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    run = chargen.train(book, root=tmp_path / "ck", epochs=1, seed=2, progress=False, tokenizer="bpe", bpe_vocab=60,
                        **TINY)
    out = chargen.export(run.run_dir, out=tmp_path / "exp")
    manifest = json.loads((out / "chargen_export.json").read_text(encoding="utf-8"))
    gen = chargen.load(run.run_dir)
    assert manifest["tokenizer"] == "bpe" and manifest["chars"] == list(gen.tokenizer.tokens)
    assert any(len(t) > 1 for t in manifest["chars"])  # merged pieces, not single characters
    step = _load_step(out, "savedmodel")
    feed = {n: np.zeros(spec["shape"], np.float32) for n, spec in manifest["inputs"].items() if n != "token"}
    got = {k: np.asarray(v) for k, v in step(token=np.array([manifest["start_token"]], np.int32), **feed).items()}
    np.testing.assert_allclose(got["probs"][0], _softmax(gen.next_logits()), atol=1e-5)
