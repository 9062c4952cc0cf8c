"""Where an export is written: under a temporary name beside OUT, synced, then renamed into place.

A failure at any point leaves nothing half-written: the temporary folder is removed, and an
existing OUT (replaced only with --overwrite, and only if it is a previous export) is moved back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from chargen.checkpoint import fsync_path
from chargen.errors import ExportError
from chargen.exporters.manifest import MANIFEST
from chargen.paths import folder_mode


def check_out(out: Path, overwrite: bool) -> None:
    """ExportError unless `out` is free, or (with `overwrite`) a previous export or an empty folder."""
    if not os.path.lexists(out):
        return
    if not out.is_dir() or out.is_symlink():
        raise ExportError(f"{out} exists and is not a folder; choose another --out")
    if not overwrite:
        raise ExportError(f"{out} already exists; choose another --out or add --overwrite to replace it")
    if any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ExportError(f"{out} is not a chargen export (no {MANIFEST}), so --overwrite will not replace "
                          "it; choose another --out")


def temporary_folder(out: Path) -> Path:
    """A new empty folder beside `out` to write the export in (mode as a plain mkdir would give)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        os.chmod(tmp, folder_mode())  # mkdtemp made it 0o700: readable by whoever can read the user's files
    except OSError as e:
        raise ExportError(f"cannot create {out}: {e.strerror or e}; choose another --out") from None
    return tmp


def put_in_place(tmp: Path, out: Path, overwrite: bool) -> None:
    """Sync everything in `tmp`, then rename it to `out` (moving a previous export aside first, deleting it last)."""
    fsync_tree(tmp)
    check_out(out, overwrite)  # again: something may have appeared while we converted
    if not os.path.lexists(out):
        os.rename(tmp, out)
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / "export")
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old / "export", out)  # put the previous export back
            os.rmdir(old)
            raise
        shutil.rmtree(old, ignore_errors=True)
    fsync_path(out.parent)


def fsync_tree(folder: Path) -> None:
    for dirpath, _, files in os.walk(folder):
        for f in files:
            fsync_path(Path(dirpath) / f)
        fsync_path(Path(dirpath))
