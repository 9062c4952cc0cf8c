"""Portable run folders (issue #12 item 7): `last` and `best` are small pointer files, not symlinks, so a run
can be zipped, copied or synced as it is and still load; pointers that are not what chargen writes are refused;
old runs with symlinks still load and get pointer files on their next save."""

import os
import shutil
import zipfile

import pytest

import chargen
from chargen import checkpoint as ckpt
from chargen.errors import CheckpointError

from conftest import TINY


def _copy(trained_run, tmp_path):
    run = tmp_path / "ck" / "book"
    shutil.copytree(trained_run.run_dir, run, symlinks=True)
    return run


def test_last_and_best_are_files_naming_a_snapshot_and_the_run_has_no_links(trained_run):
    run = trained_run.run_dir
    for name in ("last", "best"):
        assert (run / name).is_file() and not (run / name).is_symlink()
        text = (run / name).read_text(encoding="utf-8")
        assert text.endswith("\n") and (run / text.strip()).is_dir() and text.startswith("snapshots/e000")
    assert [p for p in run.rglob("*") if p.is_symlink()] == []


def test_a_zipped_run_unzipped_elsewhere_samples_as_the_original(trained_run, tmp_path):
    archive = shutil.make_archive(str(tmp_path / "book"), "zip", trained_run.run_dir.parent, trained_run.run_dir.name)
    with zipfile.ZipFile(archive) as z:  # what a zip tool stores: files and folders, no links to follow
        names = z.namelist()
        z.extractall(tmp_path / "unzipped")
    assert "book/last" in names and not any(n.startswith("book/last/") for n in names)
    copy = tmp_path / "unzipped" / "book"
    for which in ("best", "last"):
        expected = chargen.load(trained_run.run_dir, which=which).generate("the ", 40, temperature=0.8, rng_seed=5)
        assert chargen.load(copy, which=which).generate("the ", 40, temperature=0.8, rng_seed=5) == expected


def test_a_run_copied_without_its_links_is_refused_not_misread(trained_run, tmp_path):
    """What a zip of an old run with symlinks becomes (zip tools follow links): `last` a folder of its own."""
    run = tmp_path / "ck" / "book"
    shutil.copytree(trained_run.run_dir, run)
    shutil.rmtree(run / "last") if (run / "last").is_dir() else (run / "last").unlink()
    shutil.copytree(ckpt.snapshot_dir(trained_run.run_dir, "last"), run / "last")
    with pytest.raises(CheckpointError, match="last is a folder"):
        chargen.load(run, which="last")


@pytest.mark.parametrize("content, needle", [
    (b"\xff\xfe snapshots", "not a pointer to a snapshot"),
    (b"", "not a pointer to a snapshot"),
    (b"snapshots/e0001-s000000\nsnapshots/e0002-s000000\n", "not a pointer to a snapshot"),
    (b"snapshots/" + b"x" * 5000, "over 4096 bytes"),
])
def test_a_pointer_that_is_not_one_is_a_checkpoint_error(trained_run, tmp_path, content, needle):
    run = _copy(trained_run, tmp_path)
    (run / "last").write_bytes(content)
    with pytest.raises(CheckpointError, match=needle):
        chargen.load(run, which="last")


def test_a_pointer_written_on_windows_and_one_naming_a_pruned_snapshot(trained_run, tmp_path):
    run = _copy(trained_run, tmp_path)
    named = ckpt.read_pointer(run, "last")
    (run / "last").write_bytes(named.encode() + b"\r\n")  # a CR added on the way
    assert ckpt.snapshot_dir(run, "last").name == os.path.basename(named)
    (run / "best").write_text("snapshots/e0042-s000000\n")  # gone: falls back to last, as a dangling link did
    assert ckpt.snapshot_dir(run, "best").name == os.path.basename(named)


def test_pruning_deletes_nothing_while_a_pointer_cannot_be_read(trained_run, tmp_path):
    run = _copy(trained_run, tmp_path)
    files = {n: (ckpt.snapshot_dir(run, "last") / n).read_text() for n in ("config.json", "tokenizer.json",
                                                                          "progress.json", "history.jsonl")}
    arrays = {n: ckpt.read_tensors(ckpt.snapshot_dir(run, "last") / n) for n in ckpt.ARRAY_FILES[ckpt.VERSION].values()}
    before = sorted(os.listdir(run / "snapshots"))
    (run / "best").write_bytes(b"\x00garbage")
    ckpt.write_snapshot(run, "e0099-s000000", files, arrays)
    assert sorted(os.listdir(run / "snapshots")) == sorted(before + ["e0099-s000000"])


def test_an_old_run_with_symlinks_loads_and_its_next_save_writes_pointer_files(tmp_path, small_text):
    book = tmp_path / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    run = chargen.train(book, root=tmp_path / "ck", epochs=1, seed=2, progress=False, **TINY).run_dir
    for name in ("last", "best"):  # as chargen 0.1 left them
        target = ckpt.read_pointer(run, name)
        (run / name).unlink()
        os.symlink(target, run / name)
    assert chargen.load(run).generate("the ", 10, temperature=0)
    chargen.train(book, root=tmp_path / "ck", resume=True, epochs=2, progress=False)
    for name in ("last", "best"):
        assert (run / name).is_file() and not (run / name).is_symlink()
    assert ckpt.read_pointer(run, "last") == "snapshots/e0002-s000000"
