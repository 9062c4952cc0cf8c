"""Training a stateful character LSTM on a whole book: options, the book, resuming.

`train()` checks every argument and option (`check_train_args`: no TensorFlow, nothing written,
so the CLI runs it before TensorFlow loads), takes the run's lock (chargen/runlock.py: one
trainer per run), checks the checkpoint folder before reading the book, lays the book out as
`batch_size` contiguous streams, and hands over to `chargen.loop.TrainingLoop`, which runs the
epochs (state reset at epoch starts only, validation on its own model).

--overwrite leaves the old run as it is until the new one has written a complete snapshot: the
loop writes the run's copies (config.json, tokenizer.json, history.jsonl) and moves its links
only with that first snapshot (`replaces_run`), so a new run that fails before it changes nothing.
"""

from __future__ import annotations

import os
import secrets
import shlex
from collections import abc
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from chargen import checkpoint as ckpt
from chargen import finetune, memory
from chargen.budget import DEFAULT_EPOCHS
from chargen.checkpoint import check_name, default_name
from chargen.config import ModelConfig, TrainConfig, renamed
from chargen.corpus import check_source, read_text
from chargen.distributed import Engine, worker_run_dir
from chargen.errors import (CheckpointError, ConfigError, CorpusError, TrainingDiverged,  # noqa: F401 (re-exported)
                            TrainingInterrupted, VocabularyError)
from chargen.hooks import EpochEnd, StepEnd, TrainResult, split_callbacks  # noqa: F401 (re-exported)
from chargen.loop import TrainingLoop as _Loop
from chargen.paths import check_path
from chargen.precision import gpu_visible, training_kernel, training_precision
from chargen.runlock import RunLock, refuse_if_locked
from chargen.streams import Streams, split
from chargen.tokenizer import build_tokenizer
from chargen.trainlog import TrainLog

# The budget may change on resume (a new one replaces the old: chargen/budget.py), and so may how often
# snapshots are written; --distribute only changes where the arithmetic runs, not what it computes.
BUDGETS = ("epochs", "steps", "minutes")
CHANGEABLE_ON_RESUME = BUDGETS + ("save_every", "distribute")


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword options -> (ModelConfig fields, TrainConfig fields); unknown names are an error (`lstm` is `kernel`)."""
    options = renamed(TrainConfig, options)
    m_names = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
    t_names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(options) - m_names - t_names)
    if unknown:
        raise ConfigError(f"unknown training options {unknown}; known: {sorted(m_names | t_names)}")
    model = {k: v for k, v in options.items() if k in m_names}
    if "units" in model and isinstance(model["units"], (list, int)):
        model["units"] = tuple(model["units"]) if isinstance(model["units"], list) else (model["units"],)
    return model, {k: v for k, v in options.items() if k in t_names}


@dataclass(frozen=True)
class RunPlan:
    """What check_train_args found: where the run goes and the options, split and checked."""

    named_dir: Path  # root/name: what --name and --root say
    run_dir: Path  # where this process writes (NAME-workerI for a non-chief worker)
    model_options: dict[str, Any]
    train_options: dict[str, Any]
    init: finetune.InitPlan | None = None  # the run --init-from starts from


def check_train_args(corpus: Any, *, name: Any = None, root: Any = "checkpoints", resume: Any = False,
                     overwrite: Any = False, progress: Any = None, log: Any = None, log_every: Any = 60.0,
                     log_format: Any = "text", callbacks: Any = (), init_from: Any = None, init_which: Any = None,
                     new_chars: Any = None, **options: Any) -> RunPlan:
    """Every check train() can make before TensorFlow loads and before anything is written.

    TypeError for a wrongly typed argument, ConfigError for a bad option (or a model too big
    for the memory there is), CorpusError for a book path that does not exist, CheckpointError
    for a run folder that cannot be written.
    """
    if not isinstance(corpus, (str, os.PathLike)):
        raise TypeError(f"corpus must be a path (str or os.PathLike) or '-' for stdin, got {type(corpus).__name__}")
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a folder (str or os.PathLike), got {type(root).__name__}")
    for arg, value in (("resume", resume), ("overwrite", overwrite)):
        if not isinstance(value, bool):
            raise TypeError(f"{arg} must be True or False, got {value!r}")
    TrainLog.choose(progress, log, log_every, log_format)  # TypeError / ConfigError for what it cannot show
    if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, abc.Sequence):
        raise TypeError(f"callbacks must be a list (empty for none), got {type(callbacks).__name__}")
    split_callbacks(callbacks)  # each one callable or with on_step_end/on_epoch_end
    m_opts, t_opts = split_options(options)
    if str(corpus) != "-":
        check_path(corpus, "the book path")
    check_path(root, "--root")
    named_dir = Path(root) / check_name(default_name(corpus) if name is None else name)
    check_path(named_dir, "--name")
    init = finetune.check_init(init_from, init_which, new_chars, root, resume, m_opts, t_opts)
    if init is not None:  # the model and the tokenizer are the run's
        tcfg = TrainConfig(**init.train_options(t_opts)).validate()
        check_memory(init.model_config(m_opts), tcfg)
    elif resume:  # the checkpoint's settings are checked when it is read; here each given value on its own
        tcfg = TrainConfig(**{k: v for k, v in t_opts.items() if k != "bpe_vocab"}).validate()
        mcfg = ModelConfig(**{"vocab_size": 1, **m_opts}).validate()
    else:
        tcfg = TrainConfig(**t_opts).validate()
        mcfg = ModelConfig(**{"vocab_size": 1, **m_opts}).validate()  # the vocabulary comes from the text
        check_memory(mcfg, tcfg)
    run_dir = worker_run_dir(named_dir, t_opts.get("distribute"), resume)  # NAME-workerI for a non-chief worker
    ckpt.check_writable(run_dir)  # creating nothing
    check_source(corpus)  # the book exists, before a lock is taken or a folder made
    refuse_if_locked(run_dir)  # at once; train() then takes the lock itself
    return RunPlan(named_dir, run_dir, m_opts, t_opts, init)


def check_memory(mcfg: ModelConfig, tcfg: TrainConfig) -> None:
    """ConfigError unless training this model could fit in the memory available now."""
    need = memory.training_bytes(mcfg, tcfg.batch_size, tcfg.seq_len)
    memory.check_fits(need, f"training {memory.weight_count(mcfg):,} weights (--units {','.join(map(str, mcfg.units))}, "
                            f"--embed {mcfg.embed}, {mcfg.vocab_size:,} tokens) on batches of --batch-size "
                            f"{tcfg.batch_size} x --seq-len {tcfg.seq_len}",
                      "lower --units, --embed, --batch-size or --seq-len")


def train(corpus: str | os.PathLike[str], *, name: str | None = None, root: str | os.PathLike[str] = "checkpoints",
          resume: bool = False, overwrite: bool = False, progress: bool | None = None,
          log: Callable[[str], None] | None = None, log_every: float = 60.0, log_format: str = "text",
          callbacks: Sequence[Any] = (), init_from: str | os.PathLike[str] | None = None, init_which: str | None = None,
          new_chars: str | None = None, **options: Any) -> TrainResult:
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

    Only one process trains a run at a time: another train() of the same run (resume and
    overwrite included) is refused at once with RunLockedError naming the process. With
    overwrite=True the old run stays as it was until the new one has saved a complete snapshot.

    Fine-tuning (chargen/finetune.py): `init_from` (a run name under `root`, or a folder) starts
    this new run from that run's `init_which` snapshot ("best" by default, or "last"), with its model
    and tokenizer and a fresh optimizer and schedule. Characters of the text the run never saw are
    added to the vocabulary (new_chars="extend", the default) or refused ("error").
    """
    plan = check_train_args(corpus, name=name, root=root, resume=resume, overwrite=overwrite, progress=progress,
                            log=log, log_every=log_every, log_format=log_format, callbacks=callbacks,
                            init_from=init_from, init_which=init_which, new_chars=new_chars, **options)
    trainlog = TrainLog.choose(progress, log, log_every, log_format)
    with RunLock(plan.run_dir):  # before anything is read from or written to the run, until the run ends
        return _train_locked(corpus, plan, resume, overwrite, trainlog, callbacks)


def _train_locked(corpus, plan: RunPlan, resume: bool, overwrite: bool, trainlog: TrainLog, callbacks) -> TrainResult:
    run_dir, m_opts, t_opts = plan.run_dir, plan.model_options, plan.train_options
    ckpt.check_snapshots_folder(run_dir)
    exists = (run_dir / "last").exists()

    if resume:
        if not exists:
            raise CheckpointError(f"{run_dir}: nothing to resume; train without --resume first")
        snap = ckpt.open_snapshot(run_dir, "last", with_training=True)
        mcfg, tcfg = _resume_configs(snap, m_opts, t_opts)
        check_memory(mcfg, tcfg)
        tokenizer = snap.tokenizer
    else:
        if exists and not overwrite:
            raise CheckpointError(f"{run_dir} already holds a run; add --resume to continue it, "
                                  "--name NAME for a new one, or --overwrite to replace it")
        snap = None
        if plan.init is not None:
            t_opts = plan.init.train_options(t_opts)
        tcfg = TrainConfig(**t_opts).validate()
        if all(getattr(tcfg, b) is None for b in BUDGETS):
            tcfg = replace(tcfg, epochs=DEFAULT_EPOCHS)  # recorded, like the seed
        if tcfg.seed is None:
            tcfg = replace(tcfg, seed=secrets.randbelow(2**31))
        if tcfg.tokenizer == "bpe" and tcfg.bpe_vocab is None:
            from chargen.bpe import DEFAULT_VOCAB

            tcfg = replace(tcfg, bpe_vocab=DEFAULT_VOCAB)  # recorded, like the seed
        mcfg = ModelConfig(**{"vocab_size": 1, **m_opts}).validate()  # vocab set below, from the text
        if plan.init is not None:
            mcfg = plan.init.model_config(m_opts)
    engine = Engine(tcfg.distribute, tcfg.batch_size)  # early: refuses a batch the replicas cannot share
    precision_why = "as the run started"
    if tcfg.precision == "auto" or snap is None:  # auto -> what it chose, recorded so a resume keeps it
        gpu = gpu_visible()
        precision, precision_why = training_precision(tcfg, mcfg.units, training_kernel(tcfg, gpu), gpu)
        tcfg = replace(tcfg, precision=precision)

    text = read_text(corpus)
    start = None if plan.init is None else finetune.start(plan.init, text, tcfg.seed, mcfg.dropout)
    if start is not None:
        tokenizer, mcfg = start.tokenizer, start.model
        check_memory(mcfg, tcfg)
    elif snap is None:
        tokenizer = build_tokenizer(tcfg.tokenizer, text, tcfg.bpe_vocab)
        mcfg = replace(mcfg, vocab_size=tokenizer.vocab_size)
        check_memory(mcfg, tcfg)  # again, with the vocabulary's size
    try:
        ids = tokenizer.encode(text)
    except VocabularyError as e:
        raise CorpusError(f"the text does not fit the checkpoint's vocabulary ({e}); train a new run instead") from None
    del text
    unit = "characters" if tokenizer.kind == "char" else "tokens"
    book = ckpt.book_fingerprint(ids)
    if snap is not None:
        _check_same_book(snap, book, unit)
    train_ids, val_ids = split(ids, tcfg.val_fraction)
    train_streams = Streams.from_ids(train_ids, tcfg.batch_size, tcfg.seq_len, "training text", unit)
    val_streams = _val_streams(val_ids, tcfg, unit)
    if snap is not None and snap.progress["step"] > train_streams.num_batches:
        raise CheckpointError(f"{snap.path / 'progress.json'}: step {snap.progress['step']} is past the end of an "
                              f"epoch of this text ({train_streams.num_batches} steps); resume with the same book "
                              "and settings, or retrain")

    ckpt.prepare_run_dir(run_dir)
    loop = _Loop(run_dir, mcfg, tcfg, tokenizer, train_streams, val_streams, snap, trainlog, callbacks, engine)
    if start is not None:
        loop.start_from(start.weights, start.record)
    loop.resume_command = resume_command(corpus, plan.named_dir)
    loop.book = book
    loop.replaces_run = exists and overwrite and not resume  # the old run stays until the first snapshot
    loop.precision_why = precision_why
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
            if key == "precision" and value == "auto":  # auto chose when the run started; it keeps that
                continue
            if key not in CHANGEABLE_ON_RESUME and value is not None and getattr(cfg, key) != value:
                raise ConfigError(f"{key} {value!r} differs from the checkpoint's {getattr(cfg, key)!r}; "
                                  f"a resumed run keeps its settings (only {', '.join(CHANGEABLE_ON_RESUME)} may "
                                  "change)", arguments=(key, *CHANGEABLE_ON_RESUME))
    tcfg = snap.train
    changes = {key: t_opts[key] for key in CHANGEABLE_ON_RESUME if t_opts.get(key) is not None}
    if any(key in changes for key in BUDGETS):  # a new budget replaces the old one
        changes = {**{key: None for key in BUDGETS}, **changes}
    if changes:
        tcfg = replace(tcfg, **changes).validate()
    return snap.model, tcfg


def _check_same_book(snap: ckpt.Snapshot, book: dict[str, Any], unit: str) -> None:
    """Refuse to resume on a text other than the run's (snapshots from before fingerprints were kept pass)."""
    was = snap.progress.get("book")
    if was is None or was == book:
        return
    if was["tokens"] != book["tokens"]:
        differs = f"the run was trained on a text of {was['tokens']:,} {unit}, this one has {book['tokens']:,}"
    else:
        differs = f"this text has {book['tokens']:,} {unit}, as the run's did, but not the same ones"
    raise CheckpointError(f"--resume with another text: {differs}. A resumed run continues on its own text: give "
                          "that one again, or train a new run under another --name (fine-tuning on a new text "
                          "is a separate option, --init-from, coming)")


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


