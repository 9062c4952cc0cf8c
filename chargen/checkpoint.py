"""The checkpoint folder: versioned, written atomically, loaded without running any code.

    checkpoints/<name>/
        config.json  tokenizer.json  history.jsonl     (copies for people to read)
        last -> snapshots/e0003-s000000                (relative symlinks, swapped atomically)
        best -> snapshots/e0002-s000000
        snapshots/<id>/ config.json tokenizer.json weights.npz optimizer.npz
                        train_state.npz progress.json history.jsonl
        train.lock                                     (while a process trains it: chargen/runlock.py)

A snapshot is written into a temporary folder, flushed to disk and renamed into place; only
then is `last` (or `best`) re-pointed, with a symlink swap that is one rename. A kill at any
moment leaves `last` naming a complete snapshot. Weights are plain arrays in .npz files read
with allow_pickle=False (chargen/npz.py), and configs are JSON checked key by key: loading
never executes code. `last` and `best` must resolve inside the run's own snapshots/ folder and
a snapshot's files must not be links: loading never follows a link out of the run. Pruning
deletes only entries named like snapshots (or their temporary folders) in that folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chargen.config import ModelConfig, TrainConfig, from_dict, to_dict
from chargen.errors import CheckpointError, ConfigError
from chargen.net.layout import weight_shapes
from chargen.npz import read_npz, write_npz
from chargen.paths import check_path, file_mode, folder_mode
from chargen.tokenizer import Tokenizer, read_tokenizer_file, tokenizer_from_str

FORMAT = "chargen-checkpoint"
VERSION = 1
DEFAULT_ROOT = Path("checkpoints")
SNAPSHOT_FILES = ("config.json", "tokenizer.json", "weights.npz", "progress.json")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAX_NAME = 128  # characters; leaves room for what is added to it (exports/NAME-savedmodel.tmp-XXXXXXXX, NAME-worker3)
# Snapshot folders (e0003-s000120, or e0003-s000120.1 beside an existing one) and the temporary folders they
# are written in: the only entries pruning deletes.
_SNAPSHOT = re.compile(r"e\d{4,}-s\d{6,}(\.\d+)?")
_SNAPSHOT_TMP = re.compile(r"\.tmp-e\d{4,}-s\d{6,}-[A-Za-z0-9_]+")


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
    tokenizer_bytes: bytes = b""  # tokenizer.json as read, for copies (exports) made after the snapshot is pruned


# ---------------------------------------------------------------- the run folder

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


# ---------------------------------------------------------------- writing

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


def _save_npz(path: Path, arrays: list[np.ndarray]) -> None:
    write_npz(path, arrays)


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's entries: a rename in it is then on disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot(run_dir: Path, snap_id: str, files: dict[str, str], arrays: dict[str, list[np.ndarray]],
                   point: tuple[str, ...] = ("last",), replacing: bool = False) -> Path:
    """Write a complete snapshot, then atomically point `last` (and `best`, if asked) at it.

    `replacing`: this is the first snapshot of a run started with --overwrite. Until this one is
    complete the old run's links and snapshots are untouched; then its `best` is dropped (unless
    re-pointed here), `last` moves to the new snapshot, and pruning removes the old snapshots.
    """
    check_snapshots_folder(run_dir)
    snaps = run_dir / "snapshots"
    if not snaps.is_dir():
        snaps.mkdir(parents=True, exist_ok=True)
        fsync_path(run_dir)  # the folder's own name on disk before a link names anything in it
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{snap_id}-", dir=snaps))
    try:
        os.chmod(tmp, folder_mode())  # mkdtemp made it 0o700
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
    if replacing:  # the old run's best goes first: a crash in between leaves no link mixing the two runs
        (run_dir / "best").unlink(missing_ok=True)
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
    """Delete snapshots that neither `last` nor `best` names, and leftovers of killed writes.

    Only folders named like snapshots (or their temporary folders) directly in RUN/snapshots, never
    a link and never through one: other files someone put there stay, and nothing outside is touched.
    """
    snaps = run_dir / "snapshots"
    if snaps.is_symlink():
        return
    keep = {os.path.realpath(run_dir / n) for n in ("last", "best") if (run_dir / n).is_symlink()}
    for d in snaps.iterdir():
        if not (_SNAPSHOT.fullmatch(d.name) or _SNAPSHOT_TMP.fullmatch(d.name)):
            continue
        if d.is_symlink() or not d.is_dir() or os.path.realpath(d) in keep:
            continue
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- finding

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
    """The snapshot folder to load: `run` itself if it is one, else its `which` (falling back to last).

    A `best` or `last` that leads out of the run's own snapshots/ folder (an absolute link, `..`,
    or a snapshots/ that is itself a link) is refused: loading never follows a link out of the run.
    """
    if os.path.lexists(run / "weights.npz") or os.path.lexists(run / "progress.json"):
        return run
    for name in (which, "last"):
        link = run / name
        if os.path.exists(link):
            target = os.path.realpath(link)
            if os.path.dirname(target) != os.path.join(os.path.realpath(run), "snapshots"):
                shown = os.readlink(link) if link.is_symlink() else "a folder, not a link"
                raise CheckpointError(f"{link} leads out of the run's snapshots/ folder (to {shown}, {target}); "
                                      f"chargen loads only snapshots inside the run: point it at a snapshot in "
                                      f"{run / 'snapshots'} or retrain")
            return Path(target)
    raise CheckpointError(f"{run}: holds no complete snapshot (no 'last' or 'best'); train or resume it")


def read_run_snapshot(run: Path, which: str = "best", with_training: bool = False) -> "Snapshot":
    """read_snapshot(snapshot_dir(run, which)), read again if a trainer moved `which` and pruned the
    snapshot while it was being read (a run being trained can be sampled, evaluated and exported)."""
    path = snapshot_dir(run, which)
    for _ in range(2):
        try:
            return read_snapshot(path, with_training)
        except CheckpointError:
            moved = snapshot_dir(run, which)
            if moved == path:
                raise
            path = moved
    return read_snapshot(path, with_training)


# ---------------------------------------------------------------- reading

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; the checkpoint is incomplete, retrain or restore it") from None
    except (OSError, ValueError, RecursionError) as e:  # ValueError: JSON and UTF-8 errors
        raise CheckpointError(f"{path}: unreadable or corrupted ({e})") from None


def _load_npz(path: Path, required: bool = True) -> list[np.ndarray] | None:
    return read_npz(path, required)


def read_config(path: Path) -> tuple[ModelConfig, TrainConfig, dict[str, Any]]:
    doc = _read_json(path)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a chargen checkpoint config")
    version = doc.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is newer than this chargen "
                              f"understands ({VERSION}); upgrade chargen")
    train = doc.get("train")
    if isinstance(train, dict) and "precision" not in train:
        train = {**train, "precision": "fp32"}  # written before --precision: trained (and so resumes) in fp32
    try:
        return (from_dict(ModelConfig, doc.get("model"), f"{path} model"),
                from_dict(TrainConfig, train, f"{path} train"), doc)
    except ConfigError as e:
        raise CheckpointError(f"invalid checkpoint config: {e}") from None


def read_snapshot(path: Path, with_training: bool = True) -> Snapshot:
    for name in SNAPSHOT_FILES + ("optimizer.npz", "train_state.npz", "history.jsonl"):
        if os.path.islink(path / name):
            raise CheckpointError(f"{path / name} is a link (to {os.readlink(path / name)}); a snapshot's files are "
                                  "never links and chargen does not follow one out of the run: copy the file in instead")
    model, train, _ = read_config(path / "config.json")
    tokenizer_text = read_tokenizer_file(path / "tokenizer.json")
    tokenizer = tokenizer_from_str(tokenizer_text, str(path / "tokenizer.json"))  # char or BPE, by its model type
    if tokenizer.vocab_size != model.vocab_size or tokenizer.kind != train.tokenizer:
        raise CheckpointError(f"{path}: tokenizer.json has {tokenizer.vocab_size} tokens ({tokenizer.kind}) but the "
                              f"model was built for {model.vocab_size} ({train.tokenizer}); the files do not belong together")
    progress = _read_json(path / "progress.json")
    _check_progress(progress, path / "progress.json")
    history = []
    if os.path.lexists(path / "history.jsonl"):
        from chargen.curves import read_history  # checks every record (curves imports this module)

        history = read_history(path / "history.jsonl")
    weights = _load_npz(path / "weights.npz")
    check_weights(model, weights, path / "weights.npz")
    return Snapshot(model, train, tokenizer, weights,
                    _load_npz(path / "optimizer.npz", required=False) if with_training else None,
                    _load_npz(path / "train_state.npz", required=False) if with_training else None,
                    progress, history, path, tokenizer_text.encode("utf-8"))


def _check_progress(progress: Any, where: Path) -> None:
    problem = _progress_problem(progress)
    if problem:
        raise CheckpointError(f"{where}: corrupted ({problem}); use another snapshot or retrain")


def _progress_problem(p: Any) -> str | None:
    """What is wrong with a progress.json document, or None. Everything the loop restores is checked."""
    if not isinstance(p, dict):
        return f"expected a JSON object, got {type(p).__name__}"
    for key in ("epoch", "step"):
        if not _count(p.get(key)):
            return f"'{key}' is {p.get(key)!r}, expected a non-negative integer"
    batches = p.get("num_batches")
    if batches is not None and not (_count(batches) and batches > 0):
        return f"'num_batches' is {batches!r}, expected a positive integer"
    if batches is not None and p["step"] > batches:
        return f"'step' {p['step']} is past the end of an epoch of {batches} steps"
    if p.get("best_loss") is not None and not _non_negative(p["best_loss"]):
        return f"'best_loss' is {p['best_loss']!r}, expected a finite number or null"
    seconds = p.get("seconds", 0.0)  # training seconds used (a time budget counts them)
    if not _non_negative(seconds):
        return f"'seconds' is {seconds!r}, expected a finite number >= 0"
    book = p.get("book")  # absent in snapshots written before it was kept
    if book is not None and not (isinstance(book, dict) and _count(book.get("tokens"))
                                 and isinstance(book.get("sha256"), str)):
        return f"'book' is {book!r}, expected a token count and a hash"
    partial = p.get("partial")
    if partial is None:
        return None
    if not isinstance(partial, dict):
        return f"'partial' is {partial!r}, expected an object with loss_sum, steps and seconds"
    for key in ("loss_sum", "seconds"):
        if not _non_negative(partial.get(key)):
            return f"'partial' {key} is {partial.get(key)!r}, expected a finite number >= 0"
    if not _count(partial.get("steps")) or partial["steps"] > p["step"]:
        return f"'partial' steps is {partial.get('steps')!r}, expected an integer from 0 to 'step' ({p['step']})"
    return None


def _count(x: Any) -> bool:
    return type(x) is int and x >= 0


def _non_negative(x: Any) -> bool:
    return type(x) in (int, float) and math.isfinite(x) and x >= 0


def check_weights(cfg: ModelConfig, weights: list[np.ndarray], where: Path) -> None:
    """Refuse weights that do not fit the config (checked before any model is built) or are not finite floats."""
    expected, got = weight_shapes(cfg), [tuple(w.shape) for w in weights]
    if expected != got:
        raise CheckpointError(f"{where}: the arrays do not fit the model config.json describes ({cfg.cell}, vocabulary "
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
