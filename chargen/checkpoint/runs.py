"""Run folders: their names, where they may be created, and finding one by name.

A run is a folder under --root (checkpoints/ by default) named by --name or the book's stem;
a snapshot is a folder in its snapshots/. Names are plain folder names, so a run never lands
outside its root, and short enough to leave room for what chargen adds to them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from chargen.errors import CheckpointError, ConfigError
from chargen.paths import check_path

DEFAULT_ROOT = Path("checkpoints")
WHICH = ("best", "last")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAX_NAME = 128  # characters; leaves room for what is added to it (exports/NAME-savedmodel.tmp-XXXXXXXX, NAME-worker3)


def check_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str (a folder name under root) or None, got {type(name).__name__}")
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"--name {name!r} must be a plain folder name (letters, digits, '.', '_', '-'), "
                          "so the checkpoint stays inside the checkpoints folder")
    if len(name) > MAX_NAME:
        raise ConfigError(f"--name {name[:40]!r}... is {len(name)} characters long; give a name of at most {MAX_NAME}")
    return name


def snapshot_id(epoch: int, step: int) -> str:
    """The folder name of the snapshot taken after `step` steps of epoch `epoch` (0-based): e0003-s000120."""
    return f"e{epoch:04d}-s{step:06d}"


def default_name(corpus: str | os.PathLike[str]) -> str:
    stem = Path(str(corpus)).stem if str(corpus) != "-" else "stdin"
    return (re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip(".-") or "book")[:MAX_NAME]


def check_which(which: str) -> None:
    """ConfigError unless `which` names a snapshot a run points to: best or last."""
    if which not in WHICH:
        raise ConfigError(f"which must be 'best' or 'last', got {which!r}", arguments=("which",))


def check_writable(run_dir: Path) -> None:
    """Refuse, creating nothing, a run folder that could not be written (a file in the way, no permission)."""
    p = run_dir
    while not os.path.lexists(p) and p != p.parent:  # os.path: False, not an exception, where unreadable
        p = p.parent
    if not os.path.isdir(p):
        raise CheckpointError(f"{p} exists and is not a folder, so {run_dir} cannot be created; "
                              "choose another --root")
    if not os.access(p, os.W_OK | os.X_OK):
        raise CheckpointError(f"{p}: no permission to write there, so {run_dir} cannot be created; "
                              "choose another --root")


def check_snapshots_folder(run_dir: Path) -> None:
    """Refuse a run whose snapshots/ is a link: snapshots are written, pruned and loaded only inside the run."""
    snaps = run_dir / "snapshots"
    if snaps.is_symlink():
        raise CheckpointError(f"{snaps} is a link (to {os.readlink(snaps)}); chargen writes, prunes and loads "
                              "snapshots only inside the run folder: remove the link, and to use another disk "
                              "give --root a folder on it")


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run folder and check that a file can be written in it (before the slow part starts)."""
    check_writable(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise CheckpointError(f"{run_dir}: cannot write checkpoints there ({e.strerror or e}); "
                              "choose another --root or free space") from None
    check_snapshots_folder(run_dir)


def resolve_run(name_or_path: str | os.PathLike[str] | None, root: str | os.PathLike[str] = DEFAULT_ROOT) -> Path:
    """A run folder from a path or a name under `root`; None means the most recently written run."""
    if name_or_path is not None and not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a run name, a folder (str or os.PathLike) or None, "
                        f"got {type(name_or_path).__name__}")
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a folder (str or os.PathLike), got {type(root).__name__}")
    root = Path(root)
    check_path(root, "--root")
    if name_or_path is None:
        runs = list_runs(root)
        if not runs:
            raise CheckpointError(f"no checkpoints under {root}/; train one first: chargen train BOOK.txt")
        return max(runs, key=lambda r: _mtime(r))
    check_path(name_or_path, "the checkpoint")
    p = Path(name_or_path)
    if os.path.isdir(p):
        return p
    if not p.is_absolute() and len(p.parts) == 1 and os.path.isdir(root / p):
        return root / p
    names = ", ".join(sorted(r.name for r in list_runs(root))) or "none; train one with: chargen train BOOK.txt"
    raise CheckpointError(f"no checkpoint named {str(name_or_path)!r}; checkpoints under {root}/: {names}")


def list_runs(root: Path = DEFAULT_ROOT) -> list[Path]:
    if not os.path.isdir(root):
        return []
    return [d for d in root.iterdir() if d.is_dir() and any((d / f).exists() for f in ("last", "model.safetensors",
                                                                                          "weights.npz"))]


def _mtime(run: Path) -> float:
    target = run / "last" if (run / "last").exists() else run
    return target.stat().st_mtime


def run_of(folder: Path) -> Path:
    """The run a folder belongs to: itself, or for a snapshot folder (RUN/snapshots/ID) its RUN."""
    return folder.parent.parent if folder.parent.name == "snapshots" else folder
