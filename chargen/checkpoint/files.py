"""The one message for a checkpoint file that cannot be opened: missing, a folder, or unreadable."""

from __future__ import annotations

from pathlib import Path

from chargen.errors import CheckpointError


def unreadable(path: Path, error: OSError) -> CheckpointError:
    """The CheckpointError naming `path` for the OSError that opening or reading it raised."""
    if isinstance(error, FileNotFoundError):
        return CheckpointError(f"{path}: missing; the checkpoint is incomplete, retrain or restore it")
    if isinstance(error, IsADirectoryError):
        return CheckpointError(f"{path}: is a folder, not a file; the checkpoint is damaged, retrain or restore it")
    return CheckpointError(f"{path}: cannot read it ({error.strerror or error})")
