"""Fine-tuning: a new run that starts from another run's weights (`chargen train NEW.txt --init-from RUN`).

The model (units, embed, the cell) and the tokenizer come from the run it starts from, and giving
other values for them is a ConfigError; the optimizer, the learning-rate schedule, the budget and
the position in the book start fresh, on the new text (dropout may differ: it changes no weight).

Characters of the new text the run never saw are refused (new_chars="error") or added
(new_chars="extend", the default): appended to the vocabulary after the old ones, so every old id
keeps its row of the embedding and its column of the output layer. Each new character gets an
embedding row and an output column drawn small (normal, NEW_SCALE, seeded by the run's seed) and an
output bias as low as the lowest old one, so it starts as unlikely as the rarest character the model
knows. With BPE the run's merges are kept and each new character becomes a token of its own (no merge
makes or uses it), so the old tokens still encode the text as before.

The new run's config.json (and every snapshot's) records where it came from: "init_from" holds the
run, the snapshot, which of best/last it was, a SHA-256 of the weights it started from, and the
characters added.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from chargen import checkpoint as ckpt
from chargen.config import ModelConfig, TrainConfig
from chargen.errors import ConfigError, CorpusError
from chargen.tokenizer import Tokenizer
from chargen.tokenizer_base import show

NEW_CHARS = ("extend", "error")
NEW_SCALE = 0.01  # standard deviation of a new character's embedding row and output column
TOKENIZER_OPTIONS = ("tokenizer", "bpe_vocab")  # TrainConfig fields that come from the run too


@dataclass(frozen=True)
class InitPlan:
    """What check_init found: the run to start from, and its settings (read from config.json only)."""

    run: Path
    which: str
    new_chars: str
    model: ModelConfig
    train: TrainConfig

    def model_config(self, model_options: dict[str, Any]) -> ModelConfig:
        """The new run's model: the run's, with a dropout of its own if one is given."""
        return replace(self.model, **{k: v for k, v in model_options.items() if k == "dropout"}).validate()

    def train_options(self, train_options: dict[str, Any]) -> dict[str, Any]:
        """The new run's training options, with the run's tokenizer settings."""
        return {**train_options, **{k: getattr(self.train, k) for k in TOKENIZER_OPTIONS}}


@dataclass(frozen=True)
class Start:
    """What a fine-tuned run starts with: the (extended) tokenizer and model config, the weights, the record."""

    tokenizer: Tokenizer
    model: ModelConfig
    weights: list[np.ndarray]
    record: dict[str, Any]


def from_the_run() -> set[str]:
    """ModelConfig fields a fine-tuned run takes from its run (all but the vocabulary's size and dropout)."""
    return {f.name for f in fields(ModelConfig)} - {"vocab_size", "dropout"}


def check_init(init_from: Any, init_which: Any, new_chars: Any, root: Any, resume: bool,
               model_options: dict[str, Any], train_options: dict[str, Any]) -> InitPlan | None:
    """The run to start from, checked with the options given (no TensorFlow, no weights read); None without one."""
    if init_from is None:
        for name, value in (("init_which", init_which), ("new_chars", new_chars)):
            if value is not None:
                raise ConfigError(f"{name} {value!r} is for fine-tuning; add init_from (the run to start from) or "
                                  f"drop {name}", arguments=(name, "init_from"))
        return None
    if not isinstance(init_from, (str, os.PathLike)):
        raise TypeError(f"init_from must be a run name or folder (str or os.PathLike), got {type(init_from).__name__}")
    if resume:
        raise ConfigError("init_from starts a new run from another run's weights and resume continues this run; "
                          "give one of them", arguments=("init_from", "resume"))
    which = "best" if init_which is None else init_which
    ckpt.check_which(which)
    new_chars = "extend" if new_chars is None else new_chars
    if new_chars not in NEW_CHARS:
        raise ConfigError(f"new_chars must be 'extend' or 'error', got {new_chars!r}", arguments=("new_chars",))
    run = ckpt.resolve_run(init_from, root)
    model, train, _ = ckpt.read_config(ckpt.snapshot_dir(run, which) / "config.json")
    given = {**{k: v for k, v in model_options.items() if k in from_the_run()},
             **{k: train_options[k] for k in TOKENIZER_OPTIONS if train_options.get(k) is not None}}
    for key, value in given.items():
        theirs = getattr(model if key in from_the_run() else train, key)
        if value != theirs:
            raise ConfigError(f"{key} {value!r} differs from the run init_from starts from ({run.name}: {theirs!r}); a "
                              f"fine-tuned run keeps that run's model and tokenizer: drop {key}",
                              arguments=(key, "init_from"))
    return InitPlan(run, which, new_chars, model, train)


def start(plan: InitPlan, text: str, seed: int, dropout: float) -> Start:
    """Read the run's snapshot and make what the new run starts with for `text` (CorpusError for characters the
    run never saw, with new_chars="error")."""
    snap = ckpt.open_snapshot(plan.run, plan.which)
    unseen = snap.tokenizer.unknown_chars(text)
    if unseen and plan.new_chars == "error":
        raise CorpusError(f"the text has {len(unseen)} character{'s' * (len(unseen) != 1)} the run {plan.run.name} "
                          f"never saw: {show(unseen)}; pass --new-chars extend to add them to its vocabulary, or "
                          "remove them from the text")
    tokenizer = snap.tokenizer.with_chars(unseen) if unseen else snap.tokenizer
    model = replace(snap.model, vocab_size=tokenizer.vocab_size, dropout=dropout).validate()
    record = {"run": str(plan.run.resolve()), "snapshot": snap.path.name, "which": plan.which,
              "sha256": weights_sha256(snap.model, snap.weights), "new_chars": unseen}
    return Start(tokenizer, model, extend_weights(snap.model, snap.weights, len(unseen), seed), record)


def extend_weights(cfg: ModelConfig, weights: list[np.ndarray], count: int, seed: int) -> list[np.ndarray]:
    """The weights with `count` new tokens after the old ones: embedding rows and output columns drawn small,
    output biases as low as the lowest old one. The old ids' rows and columns are unchanged."""
    if count == 0:
        return list(weights)
    names = [name for name, _ in ckpt.weight_layout(cfg)]
    rng = np.random.default_rng(seed)
    out = list(weights)
    emb, kernel, bias = (names.index(n) for n in ("embedding", "output/kernel", "output/bias"))
    small = lambda shape: rng.normal(0.0, NEW_SCALE, shape).astype(np.float32)  # noqa: E731
    out[emb] = np.concatenate([weights[emb], small((count, weights[emb].shape[1]))], axis=0)
    out[kernel] = np.concatenate([weights[kernel], small((weights[kernel].shape[0], count))], axis=1)
    out[bias] = np.concatenate([weights[bias], np.full(count, weights[bias].min(), np.float32)])
    return out


def weights_sha256(cfg: ModelConfig, weights: list[np.ndarray]) -> str:
    """A SHA-256 of the weights by name, shape and bytes (little-endian float32): the same on any machine."""
    digest = hashlib.sha256()
    for (name, _), w in zip(ckpt.weight_layout(cfg), weights):
        a = np.ascontiguousarray(w, dtype="<f4")
        digest.update(f"{name}:{list(a.shape)}\n".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()
