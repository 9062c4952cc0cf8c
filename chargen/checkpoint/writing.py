"""Writing snapshots: every file synced before the rename that publishes it, then `last` (and `best`) moved.

A snapshot is written into a temporary folder in RUN/snapshots, each file fsynced, the folder
fsynced and renamed into place; only then are `last` and `best` re-pointed, and the run folder
fsynced. A kill (or a power cut) at any moment leaves `last` naming a complete snapshot:
tests/test_crash_consistency.py replays a real run's file-system calls to prove it. Pruning then
deletes the snapshots nothing names, and only folders named like snapshots, never through a link.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from chargen.checkpoint.layout import optimizer_names, state_layout, weight_layout, weight_names
from chargen.checkpoint.pointers import kept_snapshots, pointer_text
from chargen.checkpoint.runs import check_snapshots_folder
from chargen.checkpoint.tensors import write_tensors
from chargen.config import ModelConfig, TrainConfig, to_dict
from chargen.paths import file_mode, folder_mode

FORMAT = "chargen-checkpoint"
VERSION = 2  # 2: named arrays in .safetensors files and pointer files; 1 (chargen 0.1): arrays in .npz by position
ARRAY_FILES = {  # by format version: the file that holds each kind of array
    2: {"model": "model.safetensors", "optimizer": "optimizer.safetensors", "train_state": "train_state.safetensors"},
    1: {"model": "weights.npz", "optimizer": "optimizer.npz", "train_state": "train_state.npz"},
}
# Snapshot folders (e0003-s000120, or e0003-s000120.1 beside an existing one) and the temporary folders they
# are written in: the only entries pruning deletes.
_SNAPSHOT = re.compile(r"e\d{4,}-s\d{6,}(\.\d+)?")
_SNAPSHOT_TMP = re.compile(r"\.tmp-e\d{4,}-s\d{6,}-[A-Za-z0-9_]+")


def config_json(model: ModelConfig, train: TrainConfig, extra: dict[str, Any] | None = None) -> str:
    doc = {"format": FORMAT, "version": VERSION, "model": to_dict(model), "train": to_dict(train)}
    doc.update(extra or {})
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def history_jsonl(history: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(h, ensure_ascii=False) + "\n" for h in history)


def book_fingerprint(ids: np.ndarray) -> dict[str, Any]:
    """What tells one training text from another: its token count and a SHA-256 hash of its ids.

    Kept in every snapshot's progress.json so that a resume can refuse a different text. The
    hash reads the id array where it lies (no copy). SHA-256 because CPUs hash it in hardware:
    twice BLAKE2b's speed where measured, a twentieth of the time encoding took (docs/state.md).
    """
    data = np.ascontiguousarray(ids)
    data = data.astype(data.dtype.newbyteorder("<"), copy=False)  # the same hash on any machine
    digest = hashlib.sha256(data.dtype.str.encode())
    digest.update(data)
    return {"tokens": int(data.size), "sha256": digest.hexdigest()}


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it."""
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())  # mkstemp made it 0o600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def snapshot_arrays(mcfg: ModelConfig, batch_size: int, model, weights: list[np.ndarray], optimizer,
                    train_state: list[np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """What a snapshot's array files hold, by file and by name (layout.py): the model's `weights` (its
    get_weights()), the optimizer's variables and the engine's `train_state` (all rows, then the RNGs)."""
    names = weight_names(model.weights)
    if names != [name for name, _ in weight_layout(mcfg)]:  # a layer renamed: its files could not be read back
        raise RuntimeError(f"the model's weights are named {names}, not as its config lays them out; this is a bug")
    files = ARRAY_FILES[VERSION]
    return {files["model"]: dict(zip(names, weights)),
            files["optimizer"]: dict(zip(optimizer_names(optimizer.variables, model.weights),
                                         [v.numpy() for v in optimizer.variables])),
            files["train_state"]: dict(zip([name for name, *_ in state_layout(mcfg, batch_size)], train_state))}


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's entries: a rename in it is then on disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot(run_dir: Path, snap_id: str, files: dict[str, str], arrays: dict[str, dict[str, np.ndarray]],
                   point: tuple[str, ...] = ("last",), replacing: bool = False) -> Path:
    """Write a complete snapshot, then atomically point `last` (and `best`, if asked) at it (chargen/checkpoint/pointers.py).

    `replacing`: this is the first snapshot of a run started with --overwrite. Until this one is
    complete the old run's pointers and snapshots are untouched; then its `best` is dropped (unless
    re-pointed here), `last` moves to the new snapshot, and pruning removes the old snapshots.
    """
    check_snapshots_folder(run_dir)
    snaps = run_dir / "snapshots"
    if not snaps.is_dir():
        snaps.mkdir(parents=True, exist_ok=True)
        fsync_path(run_dir)  # the folder's own name on disk before a pointer names anything in it
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{snap_id}-", dir=snaps))
    try:
        os.chmod(tmp, folder_mode())  # mkdtemp made it 0o700
        for name, text in files.items():
            with open(tmp / name, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        for name, named in arrays.items():  # (snapshot_arrays)
            write_tensors(tmp / name, named, {"format": FORMAT, "version": str(VERSION), "content": name.split(".")[0]})
        fsync_path(tmp)
        # Never replace an existing folder: `last` may name it, and it would be gone for a moment.
        final, n = snaps / snap_id, 1
        while final.exists() or final.is_symlink():
            final, n = snaps / f"{snap_id}.{n}", n + 1
        os.replace(tmp, final)
        fsync_path(snaps)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if replacing:  # the old run's best goes first: a crash in between leaves no pointer mixing the two runs
        (run_dir / "best").unlink(missing_ok=True)
    for name in point:  # each a file of its own, synced before the rename that publishes it
        write_atomic(run_dir / name, pointer_text(final.name))
    fsync_path(run_dir)
    _prune(run_dir)
    return final


def _prune(run_dir: Path) -> None:
    """Delete snapshots that neither `last` nor `best` names, and leftovers of killed writes.

    Only folders named like snapshots (or their temporary folders) directly in RUN/snapshots, never
    a link and never through one: other files someone put there stay, and nothing outside is touched.
    """
    snaps = run_dir / "snapshots"
    if snaps.is_symlink():
        return
    keep = kept_snapshots(run_dir)
    if keep is None:  # a pointer that cannot be read: what it names is unknown, so nothing is deleted
        return
    for d in snaps.iterdir():
        if not (_SNAPSHOT.fullmatch(d.name) or _SNAPSHOT_TMP.fullmatch(d.name)):
            continue
        if d.is_symlink() or not d.is_dir() or os.path.realpath(d) in keep:
            continue
        shutil.rmtree(d, ignore_errors=True)
