"""benchmarks/train_speed.py: it runs, for every cell, and its Keras variants do the same work."""

import re
import subprocess
import sys

import pytest

from cells import CELLS
from conftest import ROOT


@pytest.mark.parametrize("cell", CELLS)
def test_speed_benchmark_runs_the_same_work_for_the_stock_and_the_fast_kernel(tmp_path, cell):
    """At toy sizes: the stock layer and chargen's kernel train from the same weights on the same batches, so
    their losses agree at every step (|dloss0| and max|dloss| against keras)."""
    corpus = tmp_path / "book.txt"
    corpus.write_text("the state of each row carries on. " * 200, encoding="utf-8")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--cell", cell, "--units", "8,6",
                          "--embed", "4", "--batch-size", "2", "--seq-len", "5", "--steps", "3", "--warmup", "1",
                          "--variants", "keras,fast,torch", "--baseline-batch", "0", "--no-roofline", "--corpus",
                          str(corpus)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"{cell} units (8, 6)" in out.stdout
    rows = {m[0]: m[1:] for m in re.findall(r"^(keras|fast)\s+[\d,]+\s+([\d.]+)x\s+\S+\s+([\d.e+-]+)\s+([\d.e+-]+)",
                                               out.stdout, re.M)}
    assert set(rows) == {"keras", "fast"}, out.stdout
    assert rows["keras"] == ("1.00", "0.0e+00", "0.0e+00")
    assert float(rows["fast"][1]) < 1e-5 and float(rows["fast"][2]) < 1e-4, out.stdout
