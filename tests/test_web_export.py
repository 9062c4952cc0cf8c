"""`chargen export --format web`: the folder, its weights format, and how it is written (no browser here;
tests/test_web_browser.py runs the page)."""

import errno
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

import chargen
from chargen.exporters import web as export_web
from chargen.errors import ExportError
from conftest import ROOT

PAGE = {"index.html", "chargen.js", "page.js"}


def test_the_folder_holds_the_page_the_arrays_and_the_vocabulary(trained_run, tmp_path):
    out = chargen.export(trained_run.run_dir, out=tmp_path / "site", format="web", which="last")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no temporary folder left
    assert {p.name for p in out.iterdir()} == PAGE | {"weights.bin", "chargen_export.json", "tokenizer.json"}
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # readable by a web server running as another user
    for name in PAGE:
        assert (out / name).read_bytes() == (ROOT / "chargen" / "web" / name).read_bytes()

    gen = chargen.load(trained_run.run_dir, which="last")
    doc = json.loads((out / "chargen_export.json").read_text(encoding="utf-8"))
    assert (doc["format"], doc["model_format"], doc["tokenizer"]) == ("chargen-export", "web", "char")
    assert doc["chars"] == gen.tokenizer.chars and doc["units"] == list(gen.config.units)
    assert [layer["cell"] for layer in doc["layers"]] == ["lstm", "lstm"]
    assert (out / "tokenizer.json").read_bytes() == (gen.source / "tokenizer.json").read_bytes()

    # weights.bin: every array once, float32 little-endian at its offset, in get_weights() order
    weights = gen.model.get_weights()
    data = (out / "weights.bin").read_bytes()
    assert len(data) == doc["weights_bytes"] == sum(w.size * 4 for w in weights)
    names, _ = export_web.layout(gen.config)
    assert list(doc["tensors"]) == names
    for name, w in zip(names, weights):
        t = doc["tensors"][name]
        assert t["shape"] == list(w.shape)
        raw = np.frombuffer(data, "<f4", w.size, t["offset"]).reshape(w.shape)
        np.testing.assert_array_equal(raw, w)
    for got, w in zip(export_web.read_arrays(out), weights):
        np.testing.assert_array_equal(got, w)


def test_a_failure_while_writing_leaves_nothing_and_keeps_a_previous_export(trained_run, tmp_path, monkeypatch):
    def disk_full(path, arrays):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(export_web, "_write_weights", disk_full)
        with pytest.raises(ExportError, match="No space left.*nothing was written"):
            chargen.export(trained_run.run_dir, out=tmp_path / "site", format="web")
    assert list(tmp_path.iterdir()) == []

    out = chargen.export(trained_run.run_dir, out=tmp_path / "site", format="web")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = export_web._write_weights

    def one_byte_short(path, arrays):  # the check that reads the arrays back must catch it
        tensors, size = real(path, arrays)
        with open(path, "r+b") as f:
            f.truncate(size - 1)
        return tensors, size

    monkeypatch.setattr(export_web, "_write_weights", one_byte_short)
    with pytest.raises(ExportError, match="weights.bin.*bytes, the manifest says"):
        chargen.export(trained_run.run_dir, out=out, format="web", overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_cli_exports_without_tensorflow(trained_run, tmp_path):
    """`chargen export NAME --format web` writes exports/NAME-web, and never imports TensorFlow (it needs none)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = ("import sys; from chargen.cli import main; rc = main(sys.argv[1:]); "
            "print('tensorflow' in sys.modules, file=sys.stderr); sys.exit(rc)")
    run = lambda *a: subprocess.run([sys.executable, "-c", code, "export", *map(str, a)],  # noqa: E731
                                    cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    root, name = trained_run.run_dir.parent, trained_run.run_dir.name
    r = run(name, "--root", root, "--format", "web")
    assert r.returncode == 0 and r.stderr == "False\n", r.stderr
    out = tmp_path / "exports" / f"{name}-web"
    assert r.stdout == f"exported web to {out.relative_to(tmp_path)}\n" and (out / "index.html").is_file()
    r = run(name, "--root", root, "--format", "web")
    assert r.returncode == 2 and r.stderr.startswith("chargen: error:") and "already exists" in r.stderr
    assert r.stderr.count("\n") == 2  # the one error line, then the probe's
