"""One training run: the models, the optimizer, the position in the book, and saving.

`train()` (chargen/trainer.py) checks options and lays the book out; this runs it. State
handling is the point of writing the loop out instead of using `fit`:
- state is reset at the start of every epoch and nowhere else (`fit` never resets it);
- validation runs on a separate model of its own with copied weights, so it can never
  overwrite the training rows' state (`evaluate` on the training model would);
- batches come in stream order and are never shuffled;
- on several devices (chargen/distributed.py) each replica owns a fixed block of the streams.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from chargen import checkpoint as ckpt
from chargen.config import ModelConfig, TrainConfig
from chargen.distributed import Engine, mean_loss
from chargen.errors import CheckpointError, TrainingDiverged, TrainingInterrupted
from chargen.model import build_model, reset_state
from chargen.precision import gpu_visible, lstm_kernel

LN2 = math.log(2.0)
DIVERGED_FACTOR = 100  # a loss above 100 x max(1, ln V) nats (100x worse than guessing) counts as diverged


@dataclass
class TrainResult:
    """The run folder, its per-epoch history and the best score (validation loss, or training loss without validation)."""

    run_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_loss: float | None = None

    @property
    def checkpoint(self) -> Path:
        return self.run_dir


@dataclass(frozen=True)
class EpochEnd:
    """What an epoch-end callback sees, after the epoch's snapshot was saved.

    `weights()` returns copies of the current weights (for a batch-1 Generator, say); callbacks
    get no handle on the training model, so they cannot disturb its state.
    """

    epoch: int
    record: dict[str, Any]
    run_dir: Path
    model_config: ModelConfig
    train_config: TrainConfig
    tokenizer: Any
    weights: Callable[[], list[np.ndarray]]
    improved: bool


@dataclass(frozen=True)
class StepEnd:
    """What a step-end callback (an object with `on_step_end`) sees after each training step.

    `epoch` counts the epochs finished before this one (0 in the first), `step` the steps done in
    this epoch, this one included (1..num_batches). `stop()` asks the loop to stop after this
    step, exactly as a Ctrl-C does: it saves a resumable snapshot and raises TrainingInterrupted.
    """

    epoch: int
    step: int
    num_batches: int
    loss: float
    stop: Callable[[], None]


def split_callbacks(callbacks: Sequence[Any]) -> tuple[list[Callable[[StepEnd], None]], list[Callable[[EpochEnd], None]]]:
    """(step-end, epoch-end) functions from `callbacks`: a plain callable is an epoch-end callback;
    an object may instead define `on_step_end(StepEnd)` and/or `on_epoch_end(EpochEnd)`."""
    steps, epochs = [], []
    for cb in callbacks:
        hooks = [getattr(cb, name, None) for name in ("on_step_end", "on_epoch_end")]
        if hooks == [None, None]:
            if not callable(cb):
                raise TypeError(f"callbacks: {cb!r} is neither callable nor has on_step_end/on_epoch_end")
            epochs.append(cb)
        else:
            steps += [hooks[0]] if hooks[0] else []
            epochs += [hooks[1]] if hooks[1] else []
    return steps, epochs


class TrainingLoop:
    """One training run: models, optimizer, position in the book, and saving."""

    def __init__(self, run_dir, mcfg, tcfg, tokenizer, train_streams, val_streams, snap, show, say,
                 callbacks: Sequence[Any] = (), engine: Engine | None = None):
        import keras
        import tensorflow as tf

        self.run_dir, self.mcfg, self.tcfg, self.tokenizer = run_dir, mcfg, tcfg, tokenizer
        self.streams, self.val_streams, self.show, self.say = train_streams, val_streams, show, say
        self.step_callbacks, self.callbacks = split_callbacks(callbacks)
        # Losses are nats per token; bits per *character* also divide by the characters per target token
        # of the text each figure scores (1 with the char tokenizer), so char and BPE runs compare.
        self.chars_per_token = _chars_per_token(tokenizer, train_streams)
        self.val_chars_per_token = _chars_per_token(tokenizer, val_streams)
        self.chars_per_step = train_streams.batch_size * train_streams.seq_len * self.chars_per_token
        keras.utils.set_random_seed(tcfg.seed)
        tf.config.experimental.enable_op_determinism()
        kernel = lstm_kernel(tcfg, gpu_visible())
        # One device, or R replicas each owning B/R of the streams (chargen/distributed.py).
        self.engine = engine or Engine(tcfg.distribute, tcfg.batch_size)
        if self.engine.distributed:
            say(self.engine.describe())
        self.model, self.optimizer = self.engine.build(mcfg, tcfg, kernel)
        self.eval_model = build_model(mcfg, val_streams.batch_size, tcfg.seq_len) if val_streams else None
        self.epoch, self.step, self.history, self.best = 0, 0, [], None
        self.partial = {"loss_sum": 0.0, "steps": 0, "seconds": 0.0}
        self.saved_at = None  # (epoch, step) of the snapshot `last` names
        self.book: dict[str, Any] | None = None  # the training text's fingerprint (checkpoint.book_fingerprint)
        if snap is not None:
            self._restore(snap)
        self._train_step, self._eval_step = self._compile(tf)
        self.stop_requested = False
        self.max_loss = DIVERGED_FACTOR * max(1.0, math.log(mcfg.vocab_size))
        self.resume_command = f"chargen train BOOK --name {run_dir.name} --resume"
        self.replaces_run = False  # --overwrite: the old run stays as it is until this run's first snapshot

    # ------------------------------------------------------------ compiled steps

    def _compile(self, tf):
        """The train step (on one device or R replicas: chargen/distributed.py) and the eval model's step."""
        train_step = self.engine.train_step(self.model, self.optimizer, self._lr_schedule(tf), self.tcfg.seq_len)
        eval_step = None
        if self.eval_model is not None:
            evm, vspec = self.eval_model, tf.TensorSpec((self.val_streams.batch_size, self.tcfg.seq_len), tf.int32)
            # autograph=False: plain tensor code, and AutoGraph warns that it cannot convert a lambda
            eval_step = tf.function(lambda x, y: mean_loss(evm, x, y, False), input_signature=[vspec, vspec],
                                    autograph=False)
        return train_step, eval_step

    def _lr_schedule(self, tf):
        """Cosine decay from --lr to --lr x --lr-final over all of this run's steps (None: constant).

        Counted over the whole run (epochs x batches), so a resume with the same --epochs follows
        the same curve; changing --epochs on resume stretches what is left of it.
        """
        t = self.tcfg
        if t.lr_decay == "none":
            return None
        total = float(max(t.epochs * self.streams.num_batches - 1, 1))

        def lr_at(iterations):
            progress = tf.minimum(tf.cast(iterations, tf.float32) / total, 1.0)
            return t.lr * (t.lr_final + (1.0 - t.lr_final) * 0.5 * (1.0 + tf.cos(math.pi * progress)))
        return lr_at

    # ------------------------------------------------------------ the loop

    def run(self) -> TrainResult:
        with _SigintFlag(self):  # before anything is written: a Ctrl-C from here on is saved
            self._write_run_files()
            while self.epoch < self.tcfg.epochs and not self.stop_requested:
                self._train_epoch()
                if not self.stop_requested:
                    self._end_epoch()
            if self.stop_requested and self.epoch < self.tcfg.epochs:  # a Ctrl-C in the last save finished
                if self.saved_at != (self.epoch, self.step):
                    self._save()
                raise TrainingInterrupted(
                    f"interrupted at epoch {self.epoch + 1}, step {self.step}; saved {self.run_dir}/last. "
                    f"Resume with: {self.resume_command}")
        return TrainResult(self.run_dir, self.history, self.best)

    def _stop(self) -> None:
        """Stop after the current step (a step-end callback asked): saved and reported as a Ctrl-C is."""
        self.stop_requested = True

    def _diverged(self, what: str) -> TrainingDiverged:
        last = self.run_dir / "last"
        kept = (f"{last} still names the last good snapshot ({os.readlink(last)}), but resuming would "
                f"diverge again; train again with a lower --lr (now {self.tcfg.lr:g}) and --overwrite, or "
                "under another --name" if last.is_symlink() and not self.replaces_run else
                f"nothing was saved{' and the run it was to replace is unchanged' if self.replaces_run else ''}; "
                f"train again with a lower --lr (now {self.tcfg.lr:g})")
        return TrainingDiverged(f"training diverged: {what} at epoch {self.epoch + 1}, step {self.step}; "
                                f"stopped without saving it. {kept}")

    def _train_epoch(self) -> None:
        from tqdm.auto import tqdm

        if self.step == 0:
            reset_state(self.model)  # the start of every epoch, and nowhere else
        n, chars = self.streams.num_batches, self.chars_per_step
        bar = tqdm(total=n, initial=self.step, desc=f"epoch {self.epoch + 1}/{self.tcfg.epochs}",
                   disable=not self.show, unit="step", leave=True, dynamic_ncols=True)
        t_start = time.perf_counter()
        with bar:
            while self.step < n and not self.stop_requested:
                x, y = self.streams.batch(self.step)
                t0 = time.perf_counter()
                loss = float(self._train_step(np.asarray(x, np.int32), np.asarray(y, np.int32)))
                dt = time.perf_counter() - t0
                if not (loss <= self.max_loss):  # NaN too
                    raise self._diverged(f"the loss became {loss:.4g} nats")
                self.step += 1
                self.partial["loss_sum"] += loss
                self.partial["steps"] += 1
                for callback in self.step_callbacks:
                    callback(StepEnd(self.epoch, self.step, n, loss, self._stop))
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", bpc=f"{loss / self.chars_per_token / LN2:.3f}", cps=f"{chars / dt:,.0f}",
                                refresh=False)
        self.partial["seconds"] += time.perf_counter() - t_start

    def _end_epoch(self) -> None:
        p = self.partial
        train_loss = p["loss_sum"] / max(p["steps"], 1)
        val_loss = self._validate()
        if val_loss is not None and not (val_loss <= self.max_loss):
            raise self._diverged(f"the validation loss became {val_loss:.4g} nats")
        train_bpc = train_loss / self.chars_per_token / LN2
        val_bpc = None if val_loss is None else val_loss / self.val_chars_per_token / LN2
        record = {
            "epoch": self.epoch + 1, "steps": self.step,
            "train_loss": round(train_loss, 6), "train_bpc": round(train_bpc, 6),  # losses per token, bpc per character
            "val_loss": None if val_loss is None else round(val_loss, 6),
            "val_bpc": None if val_loss is None else round(val_bpc, 6),
            "chars_per_sec": round(p["steps"] * self.chars_per_step / max(p["seconds"], 1e-9), 1),
            "seconds": round(p["seconds"], 2),
            "lr": float(self.optimizer.learning_rate.numpy()),  # the epoch's last step's
        }
        self.history.append(record)
        score = val_loss if val_loss is not None else train_loss
        improved = self.best is None or score < self.best
        if improved:
            self.best = score
        self.epoch, self.step = self.epoch + 1, 0
        self.partial = {"loss_sum": 0.0, "steps": 0, "seconds": 0.0}
        self._save(best=improved)
        nats = "nats" if self.tokenizer.kind == "char" else "nats/token"
        val_txt = "" if val_loss is None else f"  val {val_loss:.4f} {nats} ({val_bpc:.3f} bpc)"
        self.say(f"epoch {record['epoch']}: train {train_loss:.4f} {nats} ({train_bpc:.3f} bpc){val_txt}"
                 f"  {record['chars_per_sec']:,.0f} chars/s{'  *best' if improved else ''}")
        info = EpochEnd(self.epoch, record, self.run_dir, self.mcfg, self.tcfg, self.tokenizer,
                        self.model.get_weights, improved)
        for callback in self.callbacks:
            callback(info)

    def _validate(self) -> float | None:
        """Mean loss over the validation streams, carried state, on the separate eval model."""
        if self.eval_model is None:
            return None
        self.eval_model.set_weights(self.model.get_weights())
        reset_state(self.eval_model)
        total = 0.0
        for x, y in self.val_streams:
            total += float(self._eval_step(np.asarray(x, np.int32), np.asarray(y, np.int32)))
        return total / self.val_streams.num_batches

    # ------------------------------------------------------------ checkpoints

    def _write_run_files(self) -> None:
        if self.replaces_run:
            return  # written with the first snapshot, which replaces the old run (_save)
        ckpt.write_atomic(self.run_dir / "config.json", ckpt.config_json(self.mcfg, self.tcfg))
        ckpt.write_atomic(self.run_dir / "tokenizer.json", self.tokenizer.to_str())

    def _save(self, best: bool = False) -> None:
        progress = {"epoch": self.epoch, "step": self.step, "best_loss": self.best,
                    "num_batches": self.streams.num_batches, "partial": self.partial, "book": self.book}
        files = {"config.json": ckpt.config_json(self.mcfg, self.tcfg), "tokenizer.json": self.tokenizer.to_str(),
                 "progress.json": json.dumps(progress, indent=2) + "\n", "history.jsonl": ckpt.history_jsonl(self.history)}
        weights = self.model.get_weights()
        if not all(np.isfinite(w).all() for w in weights):
            raise self._diverged("the weights became NaN or Inf")
        arrays = {"weights.npz": weights,
                  "optimizer.npz": [v.numpy() for v in self.optimizer.variables],
                  "train_state.npz": self.engine.train_state(self.model)}  # all B rows, in stream order
        snap_id = ckpt.snapshot_id(self.epoch, self.step)
        try:
            ckpt.write_snapshot(self.run_dir, snap_id, files, arrays, ("last", "best") if best else ("last",),
                                replacing=self.replaces_run)
            self.saved_at = (self.epoch, self.step)
            if self.replaces_run:
                self.replaces_run = False
                self._write_run_files()
            ckpt.write_atomic(self.run_dir / "history.jsonl", files["history.jsonl"])
        except OSError as e:
            raise CheckpointError(f"{self.run_dir}: could not write snapshot {snap_id} ({e.strerror or e}); "
                                  "'last' still names the previous one; free space and resume") from None

    def _restore(self, snap: ckpt.Snapshot) -> None:
        ckpt.assign_weights(self.model, snap.weights, snap.path)
        opt_vars = self.optimizer.variables
        if snap.optimizer is None or [(a.shape, a.dtype) for a in snap.optimizer] != [
                (tuple(v.shape), np.dtype(v.dtype)) for v in opt_vars]:
            raise CheckpointError(f"{snap.path}: optimizer state is missing or does not fit (its arrays' shapes or "
                                  "dtypes differ from the optimizer's); cannot resume exactly")
        for v, a in zip(opt_vars, snap.optimizer):
            v.assign(a)
        p = snap.progress
        self.epoch, self.step, self.best = p["epoch"], p["step"], p.get("best_loss")
        self.saved_at = (self.epoch, self.step)
        self.partial = dict(p.get("partial") or self.partial)
        self.history = list(snap.history)
        if snap.train_state is not None:
            self.engine.restore_train_state(self.model, self.mcfg, snap.train_state, snap.path / "train_state.npz")


def _chars_per_token(tokenizer, streams) -> float:
    """Characters per target token over everything an epoch scores in `streams` (1.0 for the char tokenizer)."""
    if streams is None:
        return 1.0
    targets = streams.data[:, 1:streams.num_batches * streams.seq_len + 1]  # a view
    return tokenizer.count_chars(targets) / targets.size


class _SigintFlag:
    """Turn the first Ctrl-C into a flag checked after each step; a second one stops at once."""

    def __init__(self, loop: TrainingLoop):
        self.loop, self.prev = loop, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                self.loop.stop_requested = True
                signal.signal(signal.SIGINT, signal.default_int_handler)
            self.prev = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGINT, self.prev)
        return False
