"""`last` and `best`: small text files that name a snapshot of the run, read without trusting them.

    RUN/last    snapshots/e0003-s000000\\n

Plain files, not symlinks, so a run folder can be zipped, copied to Windows, synced or uploaded
as it is (a zip tool or a sync service that follows links would store a second copy of the
snapshot under `last`, and one that does not would drop it). chargen.checkpoint.writing writes
one as it publishes every file: a temporary file, fsynced, renamed over the old one, then the
run folder fsynced. Runs written by chargen 0.1 have relative symlinks instead; they are read
the same way, and the next save replaces each link with a file.

Whatever a pointer (or a link) holds, it must lead to a folder directly inside the run's own
snapshots/ once every link on the way is followed: an absolute path, `..`, or a snapshot folder
that is itself a link out of the run is a CheckpointError. Loading never leaves the run.
"""

from __future__ import annotations

import os
from pathlib import Path

from chargen.errors import CheckpointError

POINTERS = ("last", "best")
MAX_POINTER_BYTES = 4096  # "snapshots/" + a snapshot id is ~30 bytes; more is not a pointer chargen wrote
# What marks a folder as a snapshot itself (not a run): any of these files.
SNAPSHOT_MARKERS = ("model.safetensors", "weights.npz", "progress.json")


def pointer_text(snapshot: str) -> str:
    """What a pointer file holds for the snapshot folder named `snapshot` (an id such as e0003-s000000)."""
    return f"snapshots/{snapshot}\n"


def read_pointer(run: Path, name: str) -> str | None:
    """What RUN/`name` says (for a pointer file its text without the line end, for an old symlink its
    target), or None if there is none. CheckpointError if it is neither a link nor a small UTF-8 file."""
    path = run / name
    if path.is_symlink():
        return os.readlink(path)
    if not os.path.lexists(path):
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_POINTER_BYTES + 1)
        if len(data) > MAX_POINTER_BYTES:
            raise ValueError(f"it is over {MAX_POINTER_BYTES} bytes long")
        text = data.decode("utf-8").rstrip("\r\n")  # a copy through Windows may have added a CR
        if not text or "\n" in text or "\0" in text:
            raise ValueError("it does not hold one line naming a snapshot")
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder; chargen expects a small file naming a snapshot "
                              f"('{pointer_text('e0003-s000000').strip()}'): remove it, or retrain") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a pointer to a snapshot ({e}); write the snapshot's path "
                              f"into it ('{pointer_text('e0003-s000000').strip()}'), or retrain") from None
    return text


def pointed_snapshot(run: Path, name: str) -> Path | None:
    """The snapshot folder RUN/`name` names, resolved; None if there is no such pointer or the folder is gone.

    CheckpointError if it leads out of the run's own snapshots/ folder (checked before anything is read there).
    """
    text = read_pointer(run, name)
    if text is None:
        return None
    target = os.path.realpath(run / name) if (run / name).is_symlink() else os.path.realpath(run / text)
    inside = os.path.join(os.path.realpath(run), "snapshots")
    if os.path.dirname(target) != inside:
        raise CheckpointError(f"{run / name} leads out of the run's snapshots/ folder (to {text}, {target}); "
                              f"chargen loads only snapshots inside the run: point it at a snapshot in "
                              f"{run / 'snapshots'} or retrain")
    return Path(target) if os.path.isdir(target) else None


def snapshot_dir(run: Path, which: str = "best") -> Path:
    """The snapshot folder to load: `run` itself if it is one, else the one its `which` names (else `last`)."""
    if any(os.path.lexists(run / marker) for marker in SNAPSHOT_MARKERS):
        return run
    for name in (which, "last"):
        found = pointed_snapshot(run, name)
        if found is not None:
            return found
    raise CheckpointError(f"{run}: holds no complete snapshot (no 'last' or 'best'); train or resume it")


def kept_snapshots(run: Path) -> set[str] | None:
    """The real paths of the snapshots `last` and `best` name (pruning keeps those); None if either cannot
    be read, so that pruning, not knowing what it names, deletes nothing."""
    kept = set()
    for name in POINTERS:
        try:
            found = pointed_snapshot(run, name)
        except CheckpointError:
            return None
        if found is not None:
            kept.add(str(found))
    return kept
