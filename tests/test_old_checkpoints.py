"""Checkpoints written by an earlier release keep working: they load, generate the same text, evaluate and resume.

tests/data/v1-format was written by chargen 0.1.0 (checkpoint format 1: weights.npz, symlinks
`last`/`best`); tests/data/v1-format-expected.json holds what that release generated from it
(see "command" and "written_by" there). Nothing here rewrites those files: each test copies them.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import chargen

DATA = Path(__file__).resolve().parent / "data"
EXPECTED = json.loads((DATA / "v1-format-expected.json").read_text(encoding="utf-8"))


@pytest.fixture()
def old_run(tmp_path):
    run = tmp_path / "ck" / "v1-format"
    shutil.copytree(DATA / "v1-format", run, symlinks=True)
    shutil.copy(DATA / "v1-format-book.txt", tmp_path / "book.txt")
    return run


def test_an_old_checkpoint_generates_what_its_release_generated(old_run):
    gen = chargen.load(old_run)
    assert gen.generate("K", 30, temperature=0) == EXPECTED["greedy_after_K"]
    gen.reset()
    logits = gen.prime("ABCDEFG").astype(np.float64)
    p = np.exp(logits - logits.max())
    np.testing.assert_allclose(p / p.sum(), EXPECTED["probs_after_ABCDEFG"], atol=1e-6)
    assert gen.generate("HIJ", 40, temperature=1.0, rng_seed=3) == EXPECTED["sampled_t1_seed3"]


def test_an_old_checkpoint_evaluates_and_resumes(old_run, tmp_path):
    before = chargen.history(old_run)
    result = chargen.evaluate(tmp_path / "book.txt", old_run, batch_size=4, seq_len=32, compressors=False)
    assert 0 < result.bits_per_char < 2
    resumed = chargen.train(tmp_path / "book.txt", name="v1-format", root=tmp_path / "ck", resume=True, epochs=3,
                            progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == before  # the old epochs are kept as they were
    assert chargen.load(old_run, which="last").source.name.startswith("e0003")
