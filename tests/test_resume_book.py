"""A resume knows its book: snapshots keep a fingerprint of the training text (token count and a
hash of the ids) and --resume refuses another text before training a step of it."""

import json
import os
import shutil
import subprocess
import sys

import pytest

import chargen
from chargen import checkpoint as ckpt
from chargen.errors import CheckpointError

from conftest import ROOT, TINY


def _texts(small_text):
    lines = small_text.splitlines(keepends=True)
    return {"shorter": "".join(lines[:90]), "same length": "".join(reversed(lines))}


def _state_of(run):
    return ckpt.read_pointer(run, "last"), sorted(os.listdir(run / "snapshots")), (run / "history.jsonl").read_text()


@pytest.fixture()
def run(trained_run, tmp_path, small_text):
    """A copy of the trained run, its book beside it, and two other texts in its vocabulary."""
    shutil.copytree(trained_run.run_dir, tmp_path / "ck" / "book", symlinks=True)
    (tmp_path / "book.txt").write_text(small_text, encoding="utf-8")
    for name, text in _texts(small_text).items():
        (tmp_path / f"{name}.txt").write_text(text, encoding="utf-8")
    return tmp_path / "ck" / "book"


def test_snapshots_keep_the_fingerprint_of_the_text(trained_run, small_text):
    progress = json.loads((ckpt.snapshot_dir(trained_run.run_dir, "last") / "progress.json").read_text())
    tokenizer = chargen.load(trained_run.run_dir).tokenizer
    assert progress["book"] == ckpt.book_fingerprint(tokenizer.encode(small_text))
    assert progress["book"]["tokens"] == len(small_text)
    assert ckpt.book_fingerprint(tokenizer.encode(_texts(small_text)["same length"]))["sha256"] != \
        progress["book"]["sha256"]


@pytest.mark.parametrize("other", ["shorter", "same length"])
def test_resume_on_another_text_is_refused_and_changes_nothing(run, small_text, other):
    before = _state_of(run)
    n_other = len(_texts(small_text)[other])
    with pytest.raises(CheckpointError) as err:
        chargen.train(run.parent.parent / f"{other}.txt", name="book", root=run.parent, resume=True, epochs=3,
                      progress=False)
    message = str(err.value)
    assert f"{len(small_text):,}" in message and f"{n_other:,}" in message  # both lengths
    assert "--init-from" in message and "fine-tuning on a new text is a separate option" in message
    assert _state_of(run) == before


def test_resume_on_its_own_text_continues(run):
    result = chargen.train(run.parent.parent / "book.txt", name="book", root=run.parent, resume=True, epochs=3,
                           progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]


def test_a_snapshot_from_before_fingerprints_still_resumes_and_then_keeps_one(run, small_text):
    progress = ckpt.snapshot_dir(run, "last") / "progress.json"
    doc = json.loads(progress.read_text())
    del doc["book"]
    progress.write_text(json.dumps(doc))
    # any text of the vocabulary is taken, as before: nothing to compare it with
    result = chargen.train(run.parent.parent / "shorter.txt", name="book", root=run.parent, resume=True, epochs=3,
                           progress=False)
    assert json.loads((ckpt.snapshot_dir(result.run_dir, "last") / "progress.json").read_text())["book"]["tokens"] == \
        len(_texts(small_text)["shorter"])


def test_at_the_command_line_one_line_and_exit_2(run, small_text):
    r = subprocess.run([sys.executable, "-m", "chargen", "train", "shorter.txt", "--name", "book", "--root", "ck",
                        "--resume", "--epochs", "3", "--units", ",".join(map(str, TINY["units"]))],
                       cwd=run.parent.parent, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    n_other = len(_texts(small_text)["shorter"])
    assert lines[0] == (f"chargen: error: --resume with another text: the run was trained on a text of "
                        f"{len(small_text):,} characters, this one has {n_other:,}. A resumed run continues on its "
                        "own text: give that one again, or train a new run under another --name (fine-tuning on a "
                        "new text is a separate option, --init-from, coming)")
