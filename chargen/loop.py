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
import signal
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from chargen import checkpoint as ckpt
from chargen.budget import Budget
from chargen.distributed import Engine, mean_loss
from chargen.errors import CheckpointError, TrainingDiverged, TrainingInterrupted
from chargen.hooks import EpochEnd, StepEnd, TrainResult, split_callbacks  # noqa: F401 (EpochEnd, StepEnd re-exported)
from chargen.net.model import build_model, reset_state
from chargen.precision import gpu_visible, training_kernel
from chargen.signals import StopOnSignal, exit_code, signal_name
from chargen.trainlog import TrainLog, end_fields, start_fields

LN2 = math.log(2.0)


def clock() -> float:
    """Seconds on a monotonic clock: what a time budget and --save-every count (tests may make it count steps)."""
    return time.monotonic()


DIVERGED_FACTOR = 100  # a loss above 100 x max(1, ln V) nats (100x worse than guessing) counts as diverged


class TrainingLoop:
    """One training run: models, optimizer, position in the book, budget, and saving."""

    def __init__(self, run_dir, mcfg, tcfg, tokenizer, train_streams, val_streams, snap, log: TrainLog,
                 callbacks: Sequence[Any] = (), engine: Engine | None = None):
        import keras
        import tensorflow as tf

        self.run_dir, self.mcfg, self.tcfg, self.tokenizer = run_dir, mcfg, tcfg, tokenizer
        self.streams, self.val_streams, self.log = train_streams, val_streams, log
        self.step_callbacks, self.callbacks = split_callbacks(callbacks)
        # Losses are nats per token; bits per *character* also divide by the characters per target token
        # of the text each figure scores (1 with the char tokenizer), so char and BPE runs compare.
        self.chars_per_token = _chars_per_token(tokenizer, train_streams)
        self.val_chars_per_token = _chars_per_token(tokenizer, val_streams)
        self.chars_per_step = train_streams.batch_size * train_streams.seq_len * self.chars_per_token
        self.budget = Budget.of(tcfg, train_streams.num_batches)
        keras.utils.set_random_seed(tcfg.seed)
        tf.config.experimental.enable_op_determinism()
        self.kernel = training_kernel(tcfg, gpu_visible())
        # One device, or R replicas each owning B/R of the streams (chargen/distributed.py).
        self.engine = engine or Engine(tcfg.distribute, tcfg.batch_size)
        self.model, self.optimizer = self.engine.build(mcfg, tcfg, self.kernel)
        self.eval_model = build_model(mcfg, val_streams.batch_size, tcfg.seq_len) if val_streams else None
        self.epoch, self.step, self.history, self.best = 0, 0, [], None
        self.partial = {"loss_sum": 0.0, "steps": 0, "seconds": 0.0}
        self.budget_record = None  # the history row of a budget that ended mid-epoch, until training goes on
        self.seconds_before = 0.0  # training seconds of earlier sessions of this run
        self.saved_at = None  # (epoch, step) of the snapshot `last` names
        self.book: dict[str, Any] | None = None  # the training text's fingerprint (checkpoint.book_fingerprint)
        self.resumed_at = None
        self.config_extra: dict[str, Any] = {}  # what config.json says besides the configs ("init_from")
        if snap is not None:
            self._restore(snap)
        # A time budget's place on the cosine curve (seconds used / budget), set before every step.
        self.position = tf.Variable(0.0, trainable=False, dtype=tf.float32) if self.budget.kind == "minutes" else None
        self._train_step, self._eval_step = self._compile(tf)
        self.stop_requested, self.stop_signal = False, None
        self.max_loss = DIVERGED_FACTOR * max(1.0, math.log(mcfg.vocab_size))
        self.resume_command = f"chargen train BOOK --name {run_dir.name} --resume"
        self.replaces_run = False  # --overwrite: the old run stays as it is until this run's first snapshot
        self.precision_why = "as configured"  # why tcfg.precision is what it is (the trainer says, for the log)
        self.t0 = self.last_save = clock()

    # ------------------------------------------------------------ compiled steps

    def _lr_schedule(self, tf):
        """The learning rate at an optimizer step count, as the budget plans it (None: constant; chargen/budget.py)."""
        t = self.tcfg
        return self.budget.lr_function(t.lr, t.lr_final, t.lr_decay, tf, self.position)

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

    # ------------------------------------------------------------ where the run is

    @property
    def run_step(self) -> int:
        """Steps done in the whole run (the optimizer's step count)."""
        return self.epoch * self.streams.num_batches + self.step

    def seconds(self) -> float:
        """Training seconds used by the run so far, this session and earlier ones (a time budget counts these)."""
        return self.seconds_before + clock() - self.t0

    def learning_rate(self) -> float:
        return float(self.optimizer.learning_rate.numpy())

    def _next(self) -> str:
        """What comes next: "end_epoch", "end_budget", "train", or "done"."""
        if self.step == self.streams.num_batches:  # also in a run stopped right after an epoch's last step
            return "end_epoch"
        if self.budget.spent(self.run_step, self.seconds()):
            return "end_budget" if self.step and self.budget_record is None else "done"
        return "train"

    # ------------------------------------------------------------ the loop

    def run(self) -> TrainResult:
        with StopOnSignal(self._on_signal):  # before anything is written: a signal from here on is saved
            self._write_run_files()
            self.t0 = self.last_save = clock()
            self.log.start(self, start_fields(self))
            done_before = self._next() == "done"
            while not self.stop_requested and (todo := self._next()) != "done":
                try:
                    {"end_epoch": self._end_epoch, "end_budget": self._end_budget, "train": self._train_epoch}[todo]()
                except _ValidationStopped:  # a signal during validation: the epoch's (or budget's) end waits for the resume
                    pass
            if self._next() != "done":  # stopped by a signal or a step-end callback
                if self.saved_at != (self.epoch, self.step):
                    self._save("interrupted")
                self._interrupted()
        self.log.end(end_fields(self, done_before))
        return TrainResult(self.run_dir, self.history + [r for r in [self.budget_record] if r], self.best)

    def _on_signal(self, signum: int) -> None:
        self.stop_requested, self.stop_signal = True, signum

    def _stop(self) -> None:
        """Stop after the current step (a step-end callback asked): saved and reported as a Ctrl-C is."""
        self.stop_requested = True

    def _interrupted(self) -> None:
        by = "" if self.stop_signal in (None, signal.SIGINT) else f" by {signal_name(self.stop_signal)}"
        self.log.interrupted({"signal": signal_name(self.stop_signal), "epoch": self.epoch + 1, "step": self.step,
                              "snapshot": str(self.run_dir / "last"), "resume": self.resume_command,
                              "exit_code": exit_code(self.stop_signal)})
        raise TrainingInterrupted(
            f"interrupted{by} at epoch {self.epoch + 1}, step {self.step}; saved {self.run_dir}/last. "
            f"Resume with: {self.resume_command}", signum=self.stop_signal, resume_command=self.resume_command)

    def _diverged(self, what: str) -> TrainingDiverged:
        last, named = self.run_dir / "last", ckpt.read_pointer(self.run_dir, "last")
        kept = (f"{last} still names the last good snapshot ({named}), but resuming would "
                f"diverge again; train again with a lower --lr (now {self.tcfg.lr:g}) and --overwrite, or "
                "under another --name" if named is not None and not self.replaces_run else
                f"nothing was saved{' and the run it was to replace is unchanged' if self.replaces_run else ''}; "
                f"train again with a lower --lr (now {self.tcfg.lr:g})")
        return TrainingDiverged(f"training diverged: {what} at epoch {self.epoch + 1}, step {self.step}; "
                                f"stopped without saving it. {kept}")

    def _train_epoch(self) -> None:
        """Steps until the epoch's end, the budget's end, or a stop request; a snapshot every --save-every minutes."""
        if self.step == 0:
            reset_state(self.model)  # the start of every epoch, and nowhere else
        n, budget, save_every = self.streams.num_batches, self.budget, self.tcfg.save_every * 60.0
        epochs = f"/{int(budget.amount)}" if budget.kind == "epochs" else ""
        self.log.begin_epoch(self.epoch + 1, self.step, n, f"epoch {self.epoch + 1}{epochs}")
        try:
            t_prev = time.perf_counter()
            while self.step < n and not self.stop_requested:
                if self.position is not None:
                    self.position.assign(budget.fraction(self.run_step, self.seconds()))
                x, y = self.streams.batch(self.step)
                loss = float(self._train_step(np.asarray(x, np.int32), np.asarray(y, np.int32)))
                if not (loss <= self.max_loss):  # NaN too
                    raise self._diverged(f"the loss became {loss:.4g} nats")
                self.step += 1
                self.budget_record = None  # training went on past a budget's end
                self.partial["loss_sum"] += loss
                self.partial["steps"] += 1
                for callback in self.step_callbacks:
                    callback(StepEnd(self.epoch, self.step, n, loss, self._stop))
                self.log.step(loss)
                now = time.perf_counter()
                self.partial["seconds"] += now - t_prev
                t_prev = now
                if budget.spent(self.run_step, self.seconds()):
                    break
                if save_every and self.step < n and clock() - self.last_save >= save_every:
                    self._save("save-every")  # mid-epoch: `last` moves, `best` stays with validated snapshots
                    t_prev = time.perf_counter()
        finally:
            self.log.close_epoch()

    def _record(self) -> tuple[dict[str, Any], bool]:
        """The history row for the steps of this epoch so far (validated now), and whether it is the best yet."""
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
            "lr": self.learning_rate(),  # the last step's
        }
        score = val_loss if val_loss is not None else train_loss
        improved = self.best is None or score < self.best
        if improved:
            self.best = score
        return record, improved

    def _end_epoch(self) -> None:
        record, improved = self._record()
        self.history.append(record)
        self.epoch, self.step = self.epoch + 1, 0
        self.partial = {"loss_sum": 0.0, "steps": 0, "seconds": 0.0}
        self._save("epoch", best=improved)
        self.log.epoch(record, improved, self._nats())
        info = EpochEnd(self.epoch, record, self.run_dir, self.mcfg, self.tcfg, self.tokenizer,
                        self.model.get_weights, improved)
        for callback in self.callbacks:
            callback(info)

    def _end_budget(self) -> None:
        """A budget that ends mid-epoch: validate (so the last figure is known) and save a resumable snapshot.

        The epoch's row goes into history.jsonl marked "partial" (with the steps done of
        "steps_per_epoch"); a resume that trains on replaces it with the whole epoch's row.
        """
        record, improved = self._record()
        self.budget_record = {**record, "partial": True, "steps_per_epoch": self.streams.num_batches}
        self._save("budget", best=improved)
        self.log.budget(self.budget_record, improved, self._nats(), self.budget.describe())

    def _nats(self) -> str:
        return "nats" if self.tokenizer.kind == "char" else "nats/token"

    def _validate(self) -> float | None:
        """Mean loss over the validation streams, carried state, on the separate eval model."""
        if self.eval_model is None:
            return None
        self.eval_model.set_weights(self.model.get_weights())
        reset_state(self.eval_model)
        total = 0.0
        for x, y in self.val_streams:
            if self.stop_requested:  # validating a big book takes minutes: a signal should not wait for it
                raise _ValidationStopped
            total += float(self._eval_step(np.asarray(x, np.int32), np.asarray(y, np.int32)))
        return total / self.val_streams.num_batches

    # ------------------------------------------------------------ checkpoints

    def _write_run_files(self) -> None:
        if self.replaces_run:
            return  # written with the first snapshot, which replaces the old run (_save)
        ckpt.write_atomic(self.run_dir / "config.json", ckpt.config_json(self.mcfg, self.tcfg, self.config_extra))
        ckpt.write_atomic(self.run_dir / "tokenizer.json", self.tokenizer.to_str())

    def _save(self, why: str, best: bool = False) -> None:
        """A resumable snapshot of this point; `why`: epoch, budget, save-every or interrupted."""
        progress = {"epoch": self.epoch, "step": self.step, "best_loss": self.best,
                    "num_batches": self.streams.num_batches, "partial": self.partial, "book": self.book,
                    "seconds": self.seconds()}
        history = self.history + [r for r in [self.budget_record] if r]
        files = {"config.json": ckpt.config_json(self.mcfg, self.tcfg, self.config_extra),
                 "tokenizer.json": self.tokenizer.to_str(),
                 "progress.json": json.dumps(progress, indent=2) + "\n", "history.jsonl": ckpt.history_jsonl(history)}
        weights = self.model.get_weights()
        if not all(np.isfinite(w).all() for w in weights):
            raise self._diverged("the weights became NaN or Inf")
        arrays = ckpt.snapshot_arrays(self.mcfg, self.tcfg.batch_size, self.model, weights, self.optimizer,
                                      self.engine.train_state(self.model))  # all B rows, in stream order
        snap_id = ckpt.snapshot_id(self.epoch, self.step)
        try:
            final = ckpt.write_snapshot(self.run_dir, snap_id, files, arrays, ("last", "best") if best else ("last",),
                                        replacing=self.replaces_run)
            self.saved_at = (self.epoch, self.step)
            if self.replaces_run:
                self.replaces_run = False
                self._write_run_files()
            ckpt.write_atomic(self.run_dir / "history.jsonl", files["history.jsonl"])
        except OSError as e:
            raise CheckpointError(f"{self.run_dir}: could not write snapshot {snap_id} ({e.strerror or e}); "
                                  "'last' still names the previous one; free space and resume") from None
        self.last_save = clock()
        self.log.saved(str(final), why, best, self.epoch, self.step)

    def start_from(self, weights: list[np.ndarray], init_from: dict[str, Any]) -> None:
        """Fine-tuning (chargen/finetune.py): another run's weights; the optimizer and the schedule start fresh."""
        ckpt.assign_weights(self.model, weights, Path(init_from["run"]))
        self.config_extra = {"init_from": init_from}

    def _restore(self, snap: ckpt.Snapshot) -> None:
        ckpt.assign_weights(self.model, snap.weights, snap.path)
        self.config_extra = {key: snap.config[key] for key in ("init_from",) if key in snap.config}
        opt_vars = self.optimizer.variables
        saved = snap.optimizer_arrays(ckpt.optimizer_names(opt_vars, self.model.weights))
        if saved is None or [(a.shape, a.dtype) for a in saved] != [(tuple(v.shape), np.dtype(v.dtype)) for v in opt_vars]:
            raise CheckpointError(f"{snap.file('optimizer')}: optimizer state is missing or does not fit (its arrays' "
                                  "names, shapes or dtypes differ from the optimizer's); cannot resume exactly")
        for v, a in zip(opt_vars, saved):
            v.assign(a)
        p = snap.progress
        self.epoch, self.step, self.best = p["epoch"], p["step"], p.get("best_loss")
        self.saved_at = self.resumed_at = (self.epoch, self.step)
        self.partial = dict(p.get("partial") or self.partial)
        self.seconds_before = float(p.get("seconds") or 0.0)
        self.history = list(snap.history)
        if self.history and self.history[-1].get("partial"):  # a budget ended here, mid-epoch
            self.budget_record = self.history.pop()
        if snap.train_state is not None:
            self.engine.restore_train_state(self.model, self.mcfg, snap.train_state, snap.file("train_state"))


class _ValidationStopped(Exception):
    """A stop was requested during validation; nothing of the epoch's end was recorded or saved yet."""


def _chars_per_token(tokenizer, streams) -> float:
    """Characters per target token over everything an epoch scores in `streams` (1.0 for the char tokenizer)."""
    if streams is None:
        return 1.0
    targets = streams.data[:, 1:streams.num_batches * streams.seq_len + 1]  # a view
    return tokenizer.count_chars(targets) / targets.size
