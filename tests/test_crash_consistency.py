"""Crash consistency seen from outside Python: real processes, their real file-system calls.

A test inside the writing process cannot tell a synced file from one still in the page cache,
nor see a file truncated in place for an instant. So the writers run as subprocesses under
strace (tests/crash_model.py):
- every call a real `chargen train` (3 epochs: first snapshot, pruning, history copies) and a
  snapshot written over the id `last` already names make is replayed on a model of what a
  power cut could leave, and after every one of them `last`, `best` and the run folder's
  copies must name complete, synced files in every such outcome: so a snapshot written in
  place or any fsync left out fails, the pointer file's own included (three deliberately wrong
  writers show the checker catches each);
- strace's fault injection kills the snapshot writer with SIGKILL right after each file's
  truncating open (before its data) and between files; `last` and `best` must still load,
  and the next snapshot must still be written.
"""

import os
import shutil
import sys
import textwrap

import pytest

from chargen import checkpoint as ckpt
from crash_model import (PowerLossModel, Violation, check_file, check_snapshot_pointer, parse, renamed_to,
                         strace_usable, traced)

from conftest import ROOT, TINY

WHY_NOT = strace_usable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"{WHY_NOT}")

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
SNAPSHOT = list(ckpt.SNAPSHOT_FILES + ckpt.TRAINING_FILES)
COPIES = ("config.json", "tokenizer.json", "history.jsonl")
TINY_FLAGS = ["--units", ",".join(map(str, TINY["units"])), "--embed", str(TINY["embed"]),
              "--batch-size", str(TINY["batch_size"]), "--seq-len", str(TINY["seq_len"])]

# Re-write the snapshot `last` names under its own id (with `best` too): the case where writing
# in place would truncate files `last` still names. The id and the run come from the command line.
WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from chargen import checkpoint as ckpt
    run, snap_id = Path(sys.argv[1]), sys.argv[2]
    src = ckpt.snapshot_dir(run, "last")
    files = {n: (src / n).read_text(encoding="utf-8") for n in ("config.json", "tokenizer.json", "progress.json",
                                                               "history.jsonl")}
    arrays = {n: ckpt.read_tensors(src / n) for n in ckpt.ARRAY_FILES[ckpt.VERSION].values()}
    ckpt.write_snapshot(run, snap_id, files, arrays, ("last", "best"))
""")


def replay(model, calls, run, copies=()):
    """Apply every call; after each, a crash must leave `last`/`best` complete and the copies synced."""
    for call in calls:
        model.apply(call)
        for link in ("last", "best"):
            check_snapshot_pointer(model, run / link, SNAPSHOT, call)
        for name in copies:
            check_file(model, run / name, call)


def _run_copy(trained_run, tmp_path):
    scope = tmp_path / "ck"
    shutil.copytree(trained_run.run_dir, scope / "run", symlinks=True)
    (tmp_path / "writer.py").write_text(WRITER)
    return scope, scope / "run"


def _writer(tmp_path, run, log, inject=None):
    snap_id = os.path.basename(ckpt.read_pointer(run, "last"))
    return traced([sys.executable, "-B", str(tmp_path / "writer.py"), str(run), snap_id], log, inject,
                  cwd=tmp_path, env=ENV, timeout=300)


def test_a_training_run_never_leaves_last_best_or_its_copies_half_written(tmp_path, small_text):
    (tmp_path / "book.txt").write_text(small_text, encoding="utf-8")
    scope = tmp_path / "ck"
    scope.mkdir()
    model = PowerLossModel(scope, tmp_path)  # what is there before the run counts as on disk
    log = tmp_path / "trace.log"
    r = traced([sys.executable, "-m", "chargen", "train", "book.txt", "--root", "ck", "--epochs", "3", "--seed", "1",
                "--quiet", *TINY_FLAGS], log, cwd=tmp_path, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    calls = parse(log)
    run = scope / "book"
    replay(model, calls, run, COPIES)
    # the replay followed the real run: the model ends where the disk is
    snapshots = model.worlds(run / "snapshots")[0][0]
    assert sorted(snapshots.entries) == sorted(os.listdir(run / "snapshots"))
    assert model.worlds(run / "last", follow=False)[0][0].data == (run / "last").read_bytes()  # a pointer file
    published = [c for c in calls if renamed_to(c, tmp_path) == str(run / "last")]
    assert len(published) == 3  # one snapshot per epoch went through the checks


def test_rewriting_the_snapshot_last_names_never_breaks_it(trained_run, tmp_path):
    scope, run = _run_copy(trained_run, tmp_path)
    model = PowerLossModel(scope, tmp_path)
    before = ckpt.read_pointer(run, "last")
    r = _writer(tmp_path, run, tmp_path / "trace.log")
    assert r.returncode == 0, r.stderr
    replay(model, parse(tmp_path / "trace.log"), run)
    assert ckpt.read_pointer(run, "last") != before  # a new folder beside it, not the old one rewritten
    ckpt.read_snapshot(ckpt.snapshot_dir(run, "last"))


WRONG_WRITERS = {
    "in place": """
        import os, sys
        from pathlib import Path
        from chargen import checkpoint as ckpt
        snap = ckpt.snapshot_dir(Path(sys.argv[1]), "last")
        with open(os.path.join(snap, "model.safetensors"), "r+b") as f:
            data = f.read()
            f.seek(0)
            f.truncate()
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    """,
    "no fsync": """
        import os, shutil, sys
        from pathlib import Path
        from chargen import checkpoint as ckpt
        run = sys.argv[1]
        old = ckpt.snapshot_dir(Path(run), "last")
        new = os.path.join(run, "snapshots", "e0099-s000000")
        shutil.copytree(old, new + ".tmp")
        os.replace(new + ".tmp", new)
        with open(os.path.join(run, ".last.tmp"), "w") as f:  # the pointer itself synced: the copy is not
            f.write("snapshots/e0099-s000000\\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(os.path.join(run, ".last.tmp"), os.path.join(run, "last"))
    """,
    # The snapshot is written as chargen writes it; only the pointer file is renamed into place unsynced.
    "pointer not synced": """
        import os, shutil, sys
        from pathlib import Path
        from chargen import checkpoint as ckpt
        run = Path(sys.argv[1])
        src = ckpt.snapshot_dir(run, "last")
        files = {n: (src / n).read_text(encoding="utf-8") for n in ("config.json", "tokenizer.json", "progress.json",
                                                                   "history.jsonl")}
        arrays = {n: ckpt.read_tensors(src / n) for n in ckpt.ARRAY_FILES[ckpt.VERSION].values()}
        ckpt.write_snapshot(run, "e0099-s000000", files, arrays, ("best",))  # as chargen writes it, best too
        with open(run / ".last.tmp", "w") as f:
            f.write("snapshots/e0099-s000000\\n")
        os.replace(run / ".last.tmp", run / "last")
        ckpt.fsync_path(run)
    """,
}


@pytest.mark.parametrize("wrong", list(WRONG_WRITERS))
def test_the_checker_catches_a_wrong_writer(trained_run, tmp_path, wrong):
    scope, run = _run_copy(trained_run, tmp_path)
    model = PowerLossModel(scope, tmp_path)
    (tmp_path / "wrong.py").write_text(textwrap.dedent(WRONG_WRITERS[wrong]))
    r = traced([sys.executable, "-B", str(tmp_path / "wrong.py"), str(run)], tmp_path / "trace.log", cwd=tmp_path,
               env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    with pytest.raises(Violation, match="could leave (last|best) .*not synced"):
        replay(model, parse(tmp_path / "trace.log"), run)


def test_killed_after_a_truncating_open_or_between_files_last_and_best_still_load(trained_run, tmp_path):
    """SIGKILL (strace -e inject=...:signal=KILL) on entry to the first write after every open for
    writing, and to every such open (the previous file is complete, the next not begun)."""
    scope, run = _run_copy(trained_run, tmp_path)
    r = _writer(tmp_path, run, tmp_path / "clean.log")
    assert r.returncode == 0, r.stderr
    calls = parse(tmp_path / "clean.log")
    main = calls[0].pid
    counts, points, after_open = {}, [], False
    for call in calls:  # strace counts a syscall's invocations per thread, failed ones included
        if call.pid != main:
            continue
        counts[call.name] = counts.get(call.name, 0) + 1
        writing_open = call.name == "openat" and str(scope) in (call.retpath or "") and any(
            f in call.args[2] for f in ("O_WRONLY", "O_RDWR", "O_CREAT"))
        if writing_open:
            points.append(("openat", counts["openat"]))
        elif call.name == "write" and after_open:
            points.append(("write", counts["write"]))
        after_open = writing_open
    assert len(points) >= 2 * len(SNAPSHOT), points
    for k, (syscall, n) in enumerate(points):
        shutil.rmtree(scope)
        scope, run = _run_copy(trained_run, tmp_path)
        r = _writer(tmp_path, run, tmp_path / f"kill{k}.log", inject=f"{syscall}:signal=KILL:when={n}")
        where = f"killed on {syscall} #{n} ({k + 1} of {len(points)})"
        assert r.returncode == -9, (where, r.returncode, r.stderr)
        killed = [line for line in (tmp_path / f"kill{k}.log").read_text().splitlines() if line.endswith(" = ?")]
        assert f" {syscall}(" in killed[-1] and str(scope) in killed[-1], (where, killed[-1:])  # where it was meant to
        for which in ("last", "best"):
            ckpt.read_snapshot(ckpt.snapshot_dir(run, which))  # complete, or CheckpointError names what is not
        r = _writer(tmp_path, run, tmp_path / f"after{k}.log")  # the next save still works
        assert r.returncode == 0, (where, r.stderr)
        ckpt.read_snapshot(ckpt.snapshot_dir(run, "last"))
