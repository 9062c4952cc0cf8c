"""`chargen export`: a checkpoint in a form other programs run, one module per format behind `export()`.

    savedmodel  the single-step graph (step.py) as a SavedModel folder, for any TensorFlow runtime
    tflite      the same graph as model.tflite, for LiteRT on phones and small devices
    keras       the batch-1 stateful model as model.keras, stock Keras layers only
    web         a static page that generates in the browser (chargen.js; no server)

Every export is a folder holding the model, tokenizer.json (the checkpoint's, byte for byte) and
chargen_export.json (manifest.py). It is written under a temporary name, loaded back and checked
against chargen's own numpy engine, synced, and only then renamed into place (folder.py), so a
failure leaves nothing half-written. docs/export.md shows how to use each.

(The package is `exporters`, not `export`: a submodule named `export` would replace the function
`chargen.export` with itself as soon as it was imported.)
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

from chargen import checkpoint as ckpt
from chargen.errors import ConfigError, ExportError
from chargen.exporters.folder import check_out, put_in_place, temporary_folder
from chargen.exporters.manifest import MANIFEST, manifest_head
from chargen.paths import check_path

FORMATS = ("savedmodel", "tflite", "web", "keras")  # each is chargen.exporters.<format> with write(folder, snap, head)
NEEDS_TENSORFLOW = ("savedmodel", "tflite", "keras")  # the web format is arrays and files only
DEFAULT_DIR = Path("exports")

__all__ = ["DEFAULT_DIR", "FORMATS", "MANIFEST", "NEEDS_TENSORFLOW", "default_out", "export"]


def default_out(run: Path, format: str) -> Path:
    """exports/<run name>-<format>; for a snapshot folder inside a run, the run's name."""
    return DEFAULT_DIR / f"{ckpt.run_of(run).name}-{format}"


def export(checkpoint: str | os.PathLike[str] | None = None, out: str | os.PathLike[str] | None = None,
           format: str = "savedmodel", which: str = "best", root: str | os.PathLike[str] = "checkpoints",
           overwrite: bool = False) -> Path:
    """Write a checkpoint in `format` to the folder `out` and return the folder written.

    `checkpoint`, `which` and `root` pick the snapshot as `chargen.load` does (None: the newest
    run). `out` defaults to exports/<run name>-<format>. An existing `out` is refused unless
    `overwrite`, and even then only a previous export (or an empty folder) is replaced.
    """
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(map(repr, FORMATS))}, got {format!r}", arguments=("format",))
    ckpt.check_which(which)
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder (str or os.PathLike) or None, got {type(out).__name__}")
    run = ckpt.resolve_run(checkpoint, root)
    snap = ckpt.open_snapshot(run, which)
    out = Path(out) if out is not None else default_out(run, format)
    check_path(out, "--out")
    check_out(out, overwrite)  # before the slow part: refuse early, create nothing
    writer = importlib.import_module(f"chargen.exporters.{format}")
    tmp = temporary_folder(out)
    try:
        (tmp / "tokenizer.json").write_bytes(snap.tokenizer_bytes)  # as read: the run may be pruned meanwhile
        writer.write(tmp, snap, manifest_head(snap, run, which, format))
        put_in_place(tmp, out, overwrite)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(f"writing {out} failed ({e.strerror or e}); nothing was written, "
                          "free space or choose another --out") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
