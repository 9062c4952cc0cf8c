"""Reading a snapshot: every file checked before anything is built from it, and no code ever run.

Configs are JSON checked key by key (chargen.config.from_dict), the tokenizer is rebuilt from
its own JSON, arrays are read by a reader that trusts nothing in the file, and the arrays must
fit the config before any model exists. `open_snapshot` is the one way in for sample, eval,
export and serve: a run (its `best` or `last`) or a snapshot folder, read again if a trainer
moved the pointer and pruned the snapshot while it was being read.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chargen.checkpoint.npz import read_npz
from chargen.checkpoint.pointers import snapshot_dir
from chargen.checkpoint.runs import DEFAULT_ROOT, check_which, resolve_run
from chargen.checkpoint.writing import FORMAT, VERSION
from chargen.config import ModelConfig, TrainConfig, from_dict
from chargen.errors import CheckpointError, ConfigError
from chargen.tokenizer import Tokenizer, read_tokenizer_file, tokenizer_from_str

SNAPSHOT_FILES = ("config.json", "tokenizer.json", "weights.npz", "progress.json")


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


def open_snapshot(checkpoint: str | os.PathLike[str] | None = None, which: str = "best",
                  root: str | os.PathLike[str] = DEFAULT_ROOT, with_training: bool = False) -> Snapshot:
    """The snapshot sample, eval, export and serve load: `checkpoint` is a run name under `root`, a run
    folder (its `which`: best or last) or a snapshot folder; None is the newest run.

    Read again if a trainer moved `which` and pruned the snapshot while it was being read (a run
    being trained can be sampled, evaluated and exported).
    """
    check_which(which)
    run = resolve_run(checkpoint, root)
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
