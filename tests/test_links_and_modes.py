"""Pruning and links (issue #11 item 7): pruning deletes only chargen's snapshot folders inside the run's own
snapshots/ and never follows a link; a best/last (a pointer file, or an old run's symlink) or a snapshot file
leading out of the run is refused on load.
Permissions (item 8): what chargen writes gets the process umask, like any file the user creates."""

import os
import shutil
import stat

import pytest

import chargen
from chargen import checkpoint as ckpt
from chargen.errors import CheckpointError

from conftest import TINY


def _copy(trained_run, tmp_path):
    run = tmp_path / "ck" / "book"
    shutil.copytree(trained_run.run_dir, run, symlinks=True)
    return run


def _snapshot_contents(snap):
    files = {n: (snap / n).read_text() for n in ("config.json", "tokenizer.json", "progress.json", "history.jsonl")}
    arrays = {n: ckpt.read_tensors(snap / n) for n in ckpt.ARRAY_FILES[ckpt.VERSION].values()}
    return files, arrays


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_pruning_deletes_only_snapshot_folders_and_follows_no_link(trained_run, tmp_path):
    run = _copy(trained_run, tmp_path)
    outside = tmp_path / "outside"
    (outside / "e0007-s000000").mkdir(parents=True)
    (outside / "e0007-s000000" / "model.safetensors").write_text("someone else's")
    (outside / "keep.txt").write_text("someone else's")
    snaps = run / "snapshots"
    (snaps / "notes.txt").write_text("put here by hand")
    (snaps / "mine").mkdir()
    (snaps / "mine" / "data").write_text("put here by hand")
    os.symlink(outside / "e0007-s000000", snaps / "e0008-s000000")  # links named like snapshots
    os.symlink(outside, snaps / "e0009-s000000.1")
    (snaps / ".tmp-e0005-s000000-ab12cd34").mkdir()  # a killed write's leftover: pruned
    old = [p.name for p in snaps.iterdir() if p.name.startswith("e0") and not p.is_symlink()]
    before_outside = _listing(outside)
    files, arrays = _snapshot_contents(ckpt.snapshot_dir(run, "last"))
    ckpt.write_snapshot(run, "e0010-s000000", files, arrays, ("last", "best"))
    assert old and sorted(os.listdir(snaps)) == ["e0008-s000000", "e0009-s000000.1", "e0010-s000000", "mine",
                                                 "notes.txt"]
    assert _listing(outside) == before_outside and (snaps / "mine" / "data").exists()


def test_a_snapshots_folder_that_is_a_link_is_refused_and_left_alone(trained_run, tmp_path):
    run = _copy(trained_run, tmp_path)
    disk = tmp_path / "bigger-disk" / "snaps"
    shutil.move(run / "snapshots", disk)
    (disk / "unrelated.txt").write_text("not chargen's")
    (disk / "photos").mkdir()
    os.symlink(disk, run / "snapshots")
    before = _listing(disk)
    book = trained_run.run_dir.parent.parent / "book.txt"
    with pytest.raises(CheckpointError, match="snapshots is a link .*give --root a folder on it"):
        chargen.train(book, root=run.parent, resume=True, epochs=3, progress=False)
    files, arrays = _snapshot_contents(disk / os.path.basename(ckpt.read_pointer(run, "last")))
    with pytest.raises(CheckpointError, match="is a link"):
        ckpt.write_snapshot(run, "e0010-s000000", files, arrays)
    ckpt._prune(run)
    assert _listing(disk) == before  # nothing written there, nothing deleted
    with pytest.raises(CheckpointError, match="leads out of the run's snapshots/ folder"):
        chargen.load(run)


OUT_OF_THE_RUN = {  # how `best` is made to lead to tmp_path/elsewhere/snap, a sound snapshot outside the run
    "absolute link": lambda run, elsewhere: os.symlink(elsewhere, run / "best"),
    "relative ../ link": lambda run, elsewhere: os.symlink("../../elsewhere/snap", run / "best"),
    "snapshot folder that is a link": lambda run, elsewhere: (
        os.symlink(elsewhere, run / "snapshots" / "e0099-s000000"), os.symlink("snapshots/e0099-s000000", run / "best")),
    "absolute pointer": lambda run, elsewhere: (run / "best").write_text(f"{elsewhere}\n"),
    "../ pointer": lambda run, elsewhere: (run / "best").write_text("../../elsewhere/snap\n"),
    "pointer through snapshots/..": lambda run, elsewhere: (run / "best").write_text("snapshots/../../../elsewhere/snap"),
    "pointer to a snapshot folder that is a link": lambda run, elsewhere: (
        os.symlink(elsewhere, run / "snapshots" / "e0099-s000000"), (run / "best").write_text("snapshots/e0099-s000000\n")),
}


@pytest.mark.parametrize("how", list(OUT_OF_THE_RUN))
def test_best_or_last_leading_out_of_the_run_is_refused_on_load(trained_run, tmp_path, how):
    run = _copy(trained_run, tmp_path)
    elsewhere = tmp_path / "elsewhere" / "snap"
    shutil.copytree(ckpt.snapshot_dir(run, "last"), elsewhere)
    (run / "best").unlink()
    OUT_OF_THE_RUN[how](run, elsewhere)
    assert ckpt.read_snapshot(elsewhere)  # a sound snapshot: refused only for where it is
    needle = "best leads out of the run's snapshots/ folder"
    with pytest.raises(CheckpointError, match=needle):
        chargen.load(run, which="best")
    with pytest.raises(CheckpointError, match=needle):
        chargen.evaluate("the state of each row", run, which="best", compressors=False, progress=False)
    with pytest.raises(CheckpointError, match=needle):
        chargen.export(run, out=tmp_path / "exp", which="best")
    assert chargen.load(run, which="last")  # the run's own last is fine


def test_a_snapshot_file_that_is_a_link_is_refused(trained_run, tmp_path):
    snap = tmp_path / "snap"
    shutil.copytree(ckpt.snapshot_dir(trained_run.run_dir, "last"), snap)
    shutil.move(snap / "model.safetensors", tmp_path / "model.safetensors")
    os.symlink(tmp_path / "model.safetensors", snap / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors is a link"):
        chargen.load(snap)


# ------------------------------------------------------------------ permissions

def _modes(folder):
    """{path: mode} of the folder and of everything under it (links not followed)."""
    out = {".": stat.S_IMODE(folder.stat().st_mode)}
    for p in folder.rglob("*"):
        if not p.is_symlink():
            out[str(p.relative_to(folder))] = stat.S_IMODE(p.stat().st_mode)
    return out


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_runs_snapshots_and_exports_get_the_umask(tmp_path, small_text, umask):
    book = tmp_path / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    before = os.umask(umask)
    try:
        chargen.train(book, root=tmp_path / "ck", epochs=1, seed=1, progress=False, **TINY)
        out = chargen.export(tmp_path / "ck" / "book", out=tmp_path / "exports" / "book", format="tflite")
    finally:
        os.umask(before)
    for folder in (tmp_path / "ck", out):
        for path, mode in _modes(folder).items():
            expected = 0o777 & ~umask if (folder / path).is_dir() else 0o666 & ~umask
            assert mode == expected, f"{folder / path}: {oct(mode)}, expected {oct(expected)} with umask {oct(umask)}"
