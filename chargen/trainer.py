"""Training a stateful character LSTM on a whole book: options, the book, resuming.

`train()` checks every option and the checkpoint folder before reading the book, lays the
book out as `batch_size` contiguous streams, and hands over to `chargen.loop.TrainingLoop`,
which runs the epochs (state reset at epoch starts only, validation on its own model).
"""

from __future__ import annotations

import os
import secrets
import shlex
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from chargen import checkpoint as ckpt
from chargen.budget import DEFAULT_EPOCHS
from chargen.checkpoint import check_name, default_name
from chargen.config import ModelConfig, TrainConfig, flag
from chargen.corpus import read_text
from chargen.distributed import Engine, worker_run_dir
from chargen.errors import (CheckpointError, ConfigError, CorpusError, TrainingDiverged,  # noqa: F401 (re-exported)
                            TrainingInterrupted, VocabularyError)
from chargen.hooks import EpochEnd, StepEnd, TrainResult  # noqa: F401 (re-exported)
from chargen.loop import TrainingLoop as _Loop
from chargen.streams import Streams, split
from chargen.tokenizer import build_tokenizer
from chargen.trainlog import TrainLog

# The budget may change on resume (a new one replaces the old: chargen/budget.py), and so may how often
# snapshots are written; --distribute only changes where the arithmetic runs, not what it computes.
BUDGETS = ("epochs", "steps", "minutes")
CHANGEABLE_ON_RESUME = BUDGETS + ("save_every", "distribute")


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword options -> (ModelConfig fields, TrainConfig fields); unknown names are an error."""
    m_names = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
    t_names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(options) - m_names - t_names)
    if unknown:
        raise ConfigError(f"unknown training options {unknown}; known: {sorted(m_names | t_names)}")
    model = {k: v for k, v in options.items() if k in m_names}
    if "units" in model and isinstance(model["units"], (list, int)):
        model["units"] = tuple(model["units"]) if isinstance(model["units"], list) else (model["units"],)
    return model, {k: v for k, v in options.items() if k in t_names}


def train(corpus: str | os.PathLike[str], *, name: str | None = None, root: str | os.PathLike[str] = "checkpoints",
          resume: bool = False, overwrite: bool = False, progress: bool | None = None,
          log: Callable[[str], None] | None = None, log_every: float = 60.0, log_format: str = "text",
          callbacks: Sequence[Any] = (), **options: Any) -> TrainResult:
    """Train on a whole book and write checkpoints to `root/name` (name defaults to the book's stem).

    `options` are ModelConfig / TrainConfig fields (epochs=5, units=(256, 256), seed=1, ...).
    The budget is one of `epochs` (default 10), `steps` or `minutes` (chargen/budget.py); a step
    or time budget may end mid-epoch, which validates, saves a resumable snapshot and returns
    normally (the history's last row then has "partial": True). A resumable snapshot is also
    written every `save_every` minutes (default 30). With resume=True training continues from
    `last` exactly where it stopped (only the budget, `save_every` and `distribute` may change).
    distribute="mirrored" trains on every GPU of this machine, "multiworker" on the machines
    TF_CONFIG lists (chargen/distributed.py).

    What the run prints (chargen/trainlog.py): `progress=True` shows a bar on stderr, `False`
    none, and None (the default) one when stderr is a terminal. Without a bar, lines are printed
    instead: what is used, a progress line every `log_every` seconds (0: every step), every
    epoch; to `log` (a function given each line) or else to stderr, so a program run under
    nohup or a scheduler gets a readable log by default. progress=False without `log` prints
    nothing. `log_format="json"` makes each line one JSON object with an "event" field.

    Each of `callbacks` is called with an `EpochEnd` after every epoch's snapshot is saved; an
    object with `on_step_end` / `on_epoch_end` methods gets a `StepEnd` after every step and/or
    the `EpochEnd` (`StepEnd.stop()` stops the run after that step, saved as a Ctrl-C is). Ctrl-C,
    SIGTERM and SIGHUP (in the main thread) finish the step, save, and raise TrainingInterrupted.
    Returns the run folder and the per-epoch history.
    """
    m_opts, t_opts = split_options(options)
    trainlog = TrainLog.choose(progress, log, log_every, log_format)
    root = Path(root)
    named_dir = root / check_name(name or default_name(corpus))
    run_dir = worker_run_dir(named_dir, t_opts.get("distribute"), resume)  # NAME-workerI for a non-chief worker
    exists = (run_dir / "last").exists()

    if resume:
        if not exists:
            raise CheckpointError(f"{run_dir}: nothing to resume; train without --resume first")
        snap = ckpt.read_snapshot(ckpt.snapshot_dir(run_dir, "last"))
        mcfg, tcfg = _resume_configs(snap, m_opts, t_opts)
        tokenizer = snap.tokenizer
    else:
        if exists and not overwrite:
            raise CheckpointError(f"{run_dir} already holds a run; add --resume to continue it, "
                                  "--name NAME for a new one, or --overwrite to replace it")
        snap = None
        tcfg = TrainConfig(**t_opts).validate()
        if all(getattr(tcfg, b) is None for b in BUDGETS):
            tcfg = replace(tcfg, epochs=DEFAULT_EPOCHS)  # recorded, like the seed
        if tcfg.seed is None:
            tcfg = replace(tcfg, seed=secrets.randbelow(2**31))
        if tcfg.tokenizer == "bpe" and tcfg.bpe_vocab is None:
            from chargen.bpe import DEFAULT_VOCAB

            tcfg = replace(tcfg, bpe_vocab=DEFAULT_VOCAB)  # recorded, like the seed
        mcfg = ModelConfig(**{"vocab_size": 1, **m_opts}).validate()  # vocab set below, from the text
    engine = Engine(tcfg.distribute, tcfg.batch_size)  # early: refuses a batch the replicas cannot share
    ckpt.check_writable(run_dir)  # before reading a large book, and creating nothing

    text = read_text(corpus)
    if snap is None:
        tokenizer = build_tokenizer(tcfg.tokenizer, text, tcfg.bpe_vocab)
        mcfg = replace(mcfg, vocab_size=tokenizer.vocab_size)
    try:
        ids = tokenizer.encode(text)
    except VocabularyError as e:
        raise CorpusError(f"the text does not fit the checkpoint's vocabulary ({e}); train a new run instead") from None
    del text
    train_ids, val_ids = split(ids, tcfg.val_fraction)
    unit = "characters" if tokenizer.kind == "char" else "tokens"
    train_streams = Streams.from_ids(train_ids, tcfg.batch_size, tcfg.seq_len, "training text", unit)
    val_streams = _val_streams(val_ids, tcfg, unit)

    ckpt.prepare_run_dir(run_dir, overwrite and not resume)
    loop = _Loop(run_dir, mcfg, tcfg, tokenizer, train_streams, val_streams, snap, trainlog, callbacks, engine)
    loop.resume_command = resume_command(corpus, named_dir)
    return loop.run()


def resume_command(corpus: str | os.PathLike[str], run_dir: Path) -> str:
    """The command line that continues this run from the folder it was started in."""
    args = ["chargen", "train", str(corpus), "--name", run_dir.name]
    if run_dir.parent != ckpt.DEFAULT_ROOT:
        args += ["--root", str(run_dir.parent)]
    return " ".join(shlex.quote(a) for a in args + ["--resume"]) + (
        " (with the same text on stdin)" if str(corpus) == "-" else "")


def _resume_configs(snap: ckpt.Snapshot, m_opts: dict, t_opts: dict) -> tuple[ModelConfig, TrainConfig]:
    for cfg, opts in ((snap.model, m_opts), (snap.train, t_opts)):
        for key, value in opts.items():
            if key not in CHANGEABLE_ON_RESUME and value is not None and getattr(cfg, key) != value:
                raise ConfigError(f"{flag(key)} {value!r} differs from the checkpoint's {getattr(cfg, key)!r}; "
                                  "a resumed run keeps its settings (only --epochs, --steps, --minutes, "
                                  "--save-every and --distribute may change)")
    tcfg = snap.train
    changes = {key: t_opts[key] for key in CHANGEABLE_ON_RESUME if t_opts.get(key) is not None}
    if any(key in changes for key in BUDGETS):  # a new budget replaces the old one
        changes = {**{key: None for key in BUDGETS}, **changes}
    if changes:
        tcfg = replace(tcfg, **changes).validate()
    return snap.model, tcfg


def _val_streams(val_ids: np.ndarray, tcfg: TrainConfig, unit: str = "characters") -> Streams | None:
    if tcfg.val_fraction == 0:
        return None
    # Validation has its own model, so it may use fewer rows than training when the tail is short.
    rows = min(tcfg.batch_size, len(val_ids) // (tcfg.seq_len + 1))
    if rows == 0:
        raise CorpusError(f"the validation tail has {len(val_ids):,} {unit} but needs at least "
                          f"{tcfg.seq_len + 1} (seq len + 1); raise --val-fraction, lower --seq-len, "
                          "or use --val-fraction 0 to train without validation")
    return Streams.from_ids(val_ids, rows, tcfg.seq_len, "validation text", unit)


