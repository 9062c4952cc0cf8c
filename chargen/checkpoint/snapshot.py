"""Reading a snapshot: every file checked before anything is built from it, and no code ever run.

Configs are JSON checked key by key (chargen.config.from_dict), the tokenizer is rebuilt from
its own JSON, arrays are read by readers that trust nothing in the file (tensors.py for format 2's
safetensors, npz.py for format 1's .npz), and the weights must have the names and shapes the
config gives (layout.py) before any model exists. `open_snapshot` is the one way in for sample,
eval, export, serve and resume: a run (its `best` or `last`) or a snapshot folder, read again if
a trainer moved the pointer and pruned the snapshot while it was being read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from chargen.checkpoint.layout import state_layout, weight_layout
from chargen.checkpoint.npz import read_npz
from chargen.checkpoint.pointers import snapshot_dir
from chargen.checkpoint.progress import check_progress
from chargen.checkpoint.runs import DEFAULT_ROOT, check_which, resolve_run
from chargen.checkpoint.tensors import read_tensors
from chargen.checkpoint.writing import ARRAY_FILES, FORMAT, VERSION
from chargen.config import ModelConfig, TrainConfig, from_dict
from chargen.errors import CheckpointError, ConfigError
from chargen.tokenizer import Tokenizer, read_tokenizer_file, tokenizer_from_str

FLOAT32 = np.dtype(np.float32)
SNAPSHOT_FILES = ("config.json", "tokenizer.json", ARRAY_FILES[VERSION]["model"], "progress.json")  # all a load needs
TRAINING_FILES = (ARRAY_FILES[VERSION]["optimizer"], ARRAY_FILES[VERSION]["train_state"], "history.jsonl")


@dataclass
class Snapshot:
    """What a snapshot folder holds, as plain values (arrays in get_weights() and the engine's order)."""

    model: ModelConfig
    train: TrainConfig
    tokenizer: Tokenizer
    weights: list[np.ndarray]
    optimizer: dict[str, np.ndarray] | list[np.ndarray] | None  # by name (format 2) or in Keras's order (format 1)
    train_state: list[np.ndarray] | None
    progress: dict[str, Any]
    history: list[dict[str, Any]]
    path: Path
    tokenizer_bytes: bytes = b""  # tokenizer.json as read, for copies (exports) made after the snapshot is pruned
    version: int = VERSION  # the checkpoint format it was written in
    config: dict[str, Any] = field(default_factory=dict)  # config.json as read (its "init_from", if any)

    def file(self, role: str) -> Path:
        """The file that holds `role` (model, optimizer or train_state) in this snapshot's format."""
        return self.path / ARRAY_FILES[self.version][role]

    def optimizer_arrays(self, names: Sequence[str]) -> list[np.ndarray] | None:
        """The optimizer's saved arrays for variables with these checkpoint names (layout.optimizer_names),
        in that order; None if there are none or they are not exactly those (format 1: as saved)."""
        if not isinstance(self.optimizer, dict):
            return self.optimizer
        if sorted(self.optimizer) != sorted(names):
            return None
        return [self.optimizer[n] for n in names]


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


def read_config(path: Path) -> tuple[ModelConfig, TrainConfig, dict[str, Any]]:
    doc = _read_json(path)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a chargen checkpoint config")
    version = doc.get("version")
    if type(version) is not int or version < 1:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is not one chargen writes (1 to {VERSION})")
    if version > VERSION:
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
    for name in {*SNAPSHOT_FILES, *TRAINING_FILES, *ARRAY_FILES[1].values()}:
        if os.path.islink(path / name):
            raise CheckpointError(f"{path / name} is a link (to {os.readlink(path / name)}); a snapshot's files are "
                                  "never links and chargen does not follow one out of the run: copy the file in instead")
    model, train, doc = read_config(path / "config.json")
    tokenizer_text = read_tokenizer_file(path / "tokenizer.json")
    tokenizer = tokenizer_from_str(tokenizer_text, str(path / "tokenizer.json"))  # char or BPE, by its model type
    if tokenizer.vocab_size != model.vocab_size or tokenizer.kind != train.tokenizer:
        raise CheckpointError(f"{path}: tokenizer.json has {tokenizer.vocab_size} tokens ({tokenizer.kind}) but the "
                              f"model was built for {model.vocab_size} ({train.tokenizer}); the files do not belong together")
    progress = _read_json(path / "progress.json")
    check_progress(progress, path / "progress.json")
    history = []
    if os.path.lexists(path / "history.jsonl"):
        from chargen.curves import read_history  # checks every record (curves imports this module)

        history = read_history(path / "history.jsonl")
    version = doc["version"]
    files = {role: path / name for role, name in ARRAY_FILES[min(version, VERSION)].items()}
    if version >= 2:
        arrays = read_tensors(files["model"], {name: (FLOAT32, shape) for name, shape in weight_layout(model)})
        weights = [arrays[name] for name, _ in weight_layout(model)]
    else:
        weights = read_npz(files["model"])
    check_weights(model, weights, files["model"])
    optimizer = state = None
    if with_training and version >= 2:
        optimizer = read_tensors(files["optimizer"], required=False)  # its names are the optimizer's: checked on resume
        layout = state_layout(model, train.batch_size)
        arrays = read_tensors(files["train_state"], {name: (dtype, shape) for name, shape, dtype in layout},
                              required=False)
        state = None if arrays is None else [arrays[name] for name, *_ in layout]
    elif with_training:
        optimizer, state = read_npz(files["optimizer"], required=False), read_npz(files["train_state"], required=False)
    return Snapshot(model, train, tokenizer, weights, optimizer, state, progress, history, path,
                    tokenizer_text.encode("utf-8"), version, doc)


def check_weights(cfg: ModelConfig, weights: list[np.ndarray], where: Path) -> None:
    """Refuse weights that do not fit the config (checked before any model is built) or are not finite floats."""
    expected, got = [shape for _, shape in weight_layout(cfg)], [tuple(w.shape) for w in weights]
    if expected != got:
        raise CheckpointError(f"{where}: the arrays do not fit the model config.json describes (vocabulary "
                              f"{cfg.vocab_size}, embed {cfg.embed}, units {list(cfg.units)}): expected shapes "
                              f"{expected}, found {got}; the files do not belong together")
    for name, w in zip((name for name, _ in weight_layout(cfg)), weights):
        bad = "not floats" if w.dtype.kind != "f" else None if np.isfinite(w).all() else "NaN or Inf values"
        if bad:
            raise CheckpointError(f"{where}: {name} has {bad} ({w.dtype}); the checkpoint is corrupted")


def assign_weights(model, weights: list[np.ndarray], where: Path) -> None:
    """Set model weights, refusing a count or shape mismatch with a clear error (not a Keras traceback)."""
    expected = [tuple(w.shape) for w in model.weights]
    got = [tuple(w.shape) for w in weights]
    if expected != got:
        raise CheckpointError(f"{where}: weights do not fit the model its config describes "
                              f"(expected shapes {expected[:4]}..., found {got[:4]}...); the checkpoint is inconsistent")
    model.set_weights(weights)
