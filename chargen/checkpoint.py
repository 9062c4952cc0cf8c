"""The checkpoint folder: versioned, written atomically, loaded without running any code.

    checkpoints/<name>/
        config.json  tokenizer.json  history.jsonl     (copies for people to read)
        last -> snapshots/e0003-s000000                (relative symlinks, swapped atomically)
        best -> snapshots/e0002-s000000
        snapshots/<id>/ config.json tokenizer.json weights.npz optimizer.npz
                        train_state.npz progress.json history.jsonl

A snapshot is written into a temporary folder, flushed to disk and renamed into place; only
then is `last` (or `best`) re-pointed, with a symlink swap that is one rename. A kill at any
moment leaves `last` naming a complete snapshot. Weights are plain arrays in .npz files read
with allow_pickle=False, and configs are JSON checked key by key: loading never executes code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chargen.config import ModelConfig, TrainConfig, from_dict, to_dict
from chargen.errors import CheckpointError, ConfigError
from chargen.tokenizer import Tokenizer, load_tokenizer

FORMAT = "chargen-checkpoint"
VERSION = 1
DEFAULT_ROOT = Path("checkpoints")
SNAPSHOT_FILES = ("config.json", "tokenizer.json", "weights.npz", "progress.json")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass
class Snapshot:
    """What a snapshot folder holds, as plain values."""

    model: ModelConfig
    train: TrainConfig
    tokenizer: Tokenizer
    weights: list[np.ndarray]
    optimizer: list[np.ndarray] | None
    train_state: list[np.ndarray] | None
    progress: dict[str, Any]
    history: list[dict[str, Any]]
    path: Path


# ---------------------------------------------------------------- the run folder

def check_name(name: str) -> str:
    if not _NAME.match(name) or name in (".", ".."):
        raise ConfigError(f"--name {name!r} must be a plain folder name (letters, digits, '.', '_', '-'), "
                          "so the checkpoint stays inside the checkpoints folder")
    return name


def default_name(corpus: str | os.PathLike[str]) -> str:
    stem = Path(str(corpus)).stem if str(corpus) != "-" else "stdin"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip(".-") or "book"


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


def prepare_run_dir(run_dir: Path, wipe: bool) -> None:
    check_writable(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise CheckpointError(f"{run_dir}: cannot write checkpoints there ({e.strerror or e}); "
                              "choose another --root or free space") from None
    if wipe:
        for link in ("last", "best"):
            (run_dir / link).unlink(missing_ok=True)


# ---------------------------------------------------------------- writing

def config_json(model: ModelConfig, train: TrainConfig, extra: dict[str, Any] | None = None) -> str:
    doc = {"format": FORMAT, "version": VERSION, "model": to_dict(model), "train": to_dict(train)}
    doc.update(extra or {})
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def history_jsonl(history: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(h, ensure_ascii=False) + "\n" for h in history)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it."""
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_npz(path: Path, arrays: list[np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, **{f"a{i:04d}": np.asarray(a) for i, a in enumerate(arrays)})
        f.flush()
        os.fsync(f.fileno())


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's entries: a rename in it is then on disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot(run_dir: Path, snap_id: str, files: dict[str, str], arrays: dict[str, list[np.ndarray]],
                   point: tuple[str, ...] = ("last",)) -> Path:
    """Write a complete snapshot, then atomically point `last` (and `best`, if asked) at it."""
    snaps = run_dir / "snapshots"
    snaps.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{snap_id}-", dir=snaps))
    try:
        for name, text in files.items():
            with open(tmp / name, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        for name, arrs in arrays.items():
            _save_npz(tmp / name, arrs)
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
    for link in point:
        _point(run_dir / link, Path("snapshots") / final.name)
    fsync_path(run_dir)
    _prune(run_dir)
    return final


def _point(link: Path, target: Path) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _prune(run_dir: Path) -> None:
    """Delete snapshots that neither `last` nor `best` names, and leftovers of killed writes."""
    keep = {os.path.realpath(run_dir / n) for n in ("last", "best") if (run_dir / n).is_symlink()}
    for d in (run_dir / "snapshots").iterdir():
        if os.path.realpath(d) not in keep:
            shutil.rmtree(d, ignore_errors=True) if d.is_dir() else d.unlink(missing_ok=True)


# ---------------------------------------------------------------- finding

def resolve_run(name_or_path: str | os.PathLike[str] | None, root: Path = DEFAULT_ROOT) -> Path:
    """A run folder from a path or a name under `root`; None means the most recently written run."""
    if name_or_path is None:
        runs = list_runs(root)
        if not runs:
            raise CheckpointError(f"no checkpoints under {root}/; train one first: chargen train BOOK.txt")
        return max(runs, key=lambda r: _mtime(r))
    p = Path(name_or_path)
    if p.is_dir():
        return p
    if not p.is_absolute() and len(p.parts) == 1 and (root / p).is_dir():
        return root / p
    names = ", ".join(sorted(r.name for r in list_runs(root))) or "none; train one with: chargen train BOOK.txt"
    raise CheckpointError(f"no checkpoint named {str(name_or_path)!r}; checkpoints under {root}/: {names}")


def list_runs(root: Path = DEFAULT_ROOT) -> list[Path]:
    if not root.is_dir():
        return []
    return [d for d in root.iterdir() if d.is_dir() and ((d / "last").exists() or (d / "weights.npz").exists())]


def _mtime(run: Path) -> float:
    target = run / "last" if (run / "last").exists() else run
    return target.stat().st_mtime


def run_of(folder: Path) -> Path:
    """The run a folder belongs to: itself, or for a snapshot folder (RUN/snapshots/ID) its RUN."""
    return folder.parent.parent if folder.parent.name == "snapshots" else folder


WHICH = ("best", "last")


def check_which(which: str) -> None:
    """ConfigError unless `which` names a snapshot a run points to: best or last."""
    if which not in WHICH:
        raise ConfigError(f"--which must be 'best' or 'last', got {which!r}")


def snapshot_dir(run: Path, which: str = "best") -> Path:
    """The snapshot folder to load: `run` itself if it is one, else its `which` (falling back to last)."""
    if (run / "weights.npz").exists() or (run / "progress.json").exists():
        return run
    for name in (which, "last"):
        if (run / name).exists():
            return (run / name).resolve()
    raise CheckpointError(f"{run}: holds no complete snapshot (no 'last' or 'best'); train or resume it")


# ---------------------------------------------------------------- reading

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; the checkpoint is incomplete, retrain or restore it") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable or corrupted ({e})") from None


def _load_npz(path: Path, required: bool = True) -> list[np.ndarray] | None:
    if not path.exists():
        if required:
            raise CheckpointError(f"{path}: missing; the checkpoint is incomplete, retrain or restore it")
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = sorted(z.files)
            if keys != [f"a{i:04d}" for i in range(len(keys))]:
                raise ValueError("unexpected array names")
            return [z[k] for k in keys]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CheckpointError(f"{path}: truncated or corrupted ({e}); use another snapshot or retrain") from None


def read_config(path: Path) -> tuple[ModelConfig, TrainConfig, dict[str, Any]]:
    doc = _read_json(path)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a chargen checkpoint config")
    version = doc.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is newer than this chargen "
                              f"understands ({VERSION}); upgrade chargen")
    try:
        return (from_dict(ModelConfig, doc.get("model"), f"{path} model"),
                from_dict(TrainConfig, doc.get("train"), f"{path} train"), doc)
    except ConfigError as e:
        raise CheckpointError(f"invalid checkpoint config: {e}") from None


def read_snapshot(path: Path, with_training: bool = True) -> Snapshot:
    model, train, _ = read_config(path / "config.json")
    tokenizer = load_tokenizer(path / "tokenizer.json")  # a char or a BPE vocabulary, by its model type
    if tokenizer.vocab_size != model.vocab_size or tokenizer.kind != train.tokenizer:
        raise CheckpointError(f"{path}: tokenizer.json has {tokenizer.vocab_size} tokens ({tokenizer.kind}) but the "
                              f"model was built for {model.vocab_size} ({train.tokenizer}); the files do not belong together")
    progress = _read_json(path / "progress.json")
    _check_progress(progress, path / "progress.json")
    history = []
    hist_path = path / "history.jsonl"
    if hist_path.exists():
        try:
            history = [json.loads(line) for line in hist_path.read_text(encoding="utf-8").splitlines() if line]
        except (ValueError, OSError) as e:
            raise CheckpointError(f"{hist_path}: corrupted ({e})") from None
    weights = _load_npz(path / "weights.npz")
    check_weights(model, weights, path / "weights.npz")
    return Snapshot(model, train, tokenizer, weights,
                    _load_npz(path / "optimizer.npz", required=False) if with_training else None,
                    _load_npz(path / "train_state.npz", required=False) if with_training else None,
                    progress, history, path)


def _check_progress(progress: Any, where: Path) -> None:
    ok = isinstance(progress, dict) and all(type(progress.get(k)) is int and progress[k] >= 0 for k in ("epoch", "step"))
    partial = progress.get("partial") if ok else None
    seconds = progress.get("seconds", 0.0) if ok else None  # training seconds used (a time budget counts them)
    if not ok or not (partial is None or isinstance(partial, dict) and all(
            type(partial.get(k)) in (int, float) for k in ("loss_sum", "steps", "seconds"))) or not (
            type(seconds) in (int, float) and 0 <= seconds < float("inf")):
        raise CheckpointError(f"{where}: corrupted (expected non-negative integers 'epoch' and 'step', "
                              "numbers in 'partial' and seconds >= 0)")


def weight_shapes(cfg: ModelConfig) -> list[tuple[int, ...]]:
    """The shapes of get_weights() for a config: embedding, (kernel, recurrent, bias) per layer, dense."""
    shapes: list[tuple[int, ...]] = [(cfg.vocab_size, cfg.embed)]
    inputs = cfg.embed
    for u in cfg.units:
        shapes += [(inputs, 4 * u), (u, 4 * u), (4 * u,)]
        inputs = u
    return shapes + [(inputs, cfg.vocab_size), (cfg.vocab_size,)]


def check_weights(cfg: ModelConfig, weights: list[np.ndarray], where: Path) -> None:
    """Refuse weights that do not fit the config (checked before any model is built) or are not finite floats."""
    expected, got = weight_shapes(cfg), [tuple(w.shape) for w in weights]
    if expected != got:
        raise CheckpointError(f"{where}: the arrays do not fit the model config.json describes (vocabulary "
                              f"{cfg.vocab_size}, embed {cfg.embed}, units {list(cfg.units)}): expected shapes "
                              f"{expected}, found {got}; the files do not belong together")
    for i, w in enumerate(weights):
        bad = "not floats" if w.dtype.kind != "f" else None if np.isfinite(w).all() else "NaN or Inf values"
        if bad:
            raise CheckpointError(f"{where}: array {i} has {bad} ({w.dtype}); the checkpoint is corrupted")


def assign_weights(model, weights: list[np.ndarray], where: Path) -> None:
    """Set model weights, refusing a count or shape mismatch with a clear error (not a Keras traceback)."""
    expected = [tuple(w.shape) for w in model.weights]
    got = [tuple(w.shape) for w in weights]
    if expected != got:
        raise CheckpointError(f"{where}: weights do not fit the model its config describes "
                              f"(expected shapes {expected[:4]}..., found {got[:4]}...); the checkpoint is inconsistent")
    model.set_weights(weights)
