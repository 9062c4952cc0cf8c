"""benchmarks/gru_speed.py: it runs and compares the same work."""

import re
import subprocess
import sys

from conftest import ROOT


def test_speed_benchmark_runs_the_same_work_for_every_keras_variant(tmp_path):
    """At toy sizes: it runs, and the stock and fast GRU train from the same weights on the same batches."""
    corpus = tmp_path / "book.txt"
    corpus.write_text("the state of each row carries on. " * 200, encoding="utf-8")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gru_speed.py"), "--units", "8,6", "--embed", "4",
                          "--batch-size", "2", "--seq-len", "5", "--rounds", "2", "--steps-per-round", "2",
                          "--variants", "keras,fast", "--corpus", str(corpus)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {m[0]: m[1:] for m in re.findall(r"^(keras|fast)\s+[\d,]+\s+([\d.]+)x\s+-\s+\d+%\s+[\d.]+\s+([\d.]+)\s+([\d.]+)$",
                                               out.stdout, re.M)}
    assert set(rows) == {"keras", "fast"}, out.stdout
    assert rows["keras"][0] == "1.00"
    assert rows["fast"][1:] == rows["keras"][1:]  # first and last loss: same weights, same batches, same maths
