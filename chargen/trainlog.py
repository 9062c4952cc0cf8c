"""What a training run tells its user: a progress bar, plain lines, JSON lines, or nothing.

- On a terminal: tqdm's bar for each epoch, with the start, epoch and save lines above it.
- Anywhere else (stderr to a file or a pipe: nohup, tmux logs, cron, Slurm, Kubernetes): plain
  lines, each starting with the local date and time (lines given to a `log` function do not):
  what is used, a progress line every `log_every` seconds (step, epoch %, the mean loss since
  the last line, bpc, chars/s, the time left in the epoch and in the run), every epoch, every
  mid-epoch save and a budget's end.
- `log_format="json"`: the same as one JSON object per line, with an "event" field (start,
  progress, epoch, saved, budget, end, interrupted; the CLI adds sample and error) and a "time".
- Quiet: nothing.
Per step the loop adds the loss and reads time.monotonic(); nothing else happens between lines,
so the lines cost nothing measurable (benchmarks/log_overhead.py).
"""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import datetime
from typing import Any, Callable

from chargen.errors import ConfigError

LN2 = math.log(2.0)
FORMATS = ("text", "json")


def stderr_line(line: str) -> None:
    """Print one line on stderr at once (sys.stderr looked up now: tests and programs replace it)."""
    print(line, file=sys.stderr, flush=True)


def json_line(event: str, **fields: Any) -> str:
    """One JSON log line: {"event": ..., "time": ISO 8601 local time with its offset, **fields}."""
    return json.dumps({"event": event, "time": datetime.now().astimezone().isoformat(timespec="seconds"), **fields},
                      ensure_ascii=False)


def duration(seconds: float) -> str:
    """45s, 12m05s, 3h02m, 2d03h: short and sortable by eye."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def check_log_options(log_every: Any, log_format: Any) -> None:
    """ConfigError for a bad `log_every` (seconds >= 0; 0 = a line after every step) or `log_format`."""
    if not (isinstance(log_every, (int, float)) and not isinstance(log_every, bool) and math.isfinite(log_every)
            and log_every >= 0):
        raise ConfigError(f"log_every must be a number of seconds >= 0 (0: a line after every step), got {log_every!r}",
                          arguments=("log_every",))
    if log_format not in FORMATS:
        raise ConfigError(f"log_format must be one of {', '.join(FORMATS)}, got {log_format!r}", arguments=("log_format",))


class TrainLog:
    """Receives a run's events from the loop and shows them as the mode asks.

    `bar`: tqdm on stderr; `lines`: lines (and periodic progress lines unless there is a bar) go
    to `write` (stderr by default); `json`: those lines are JSON objects.
    """

    def __init__(self, bar: bool, lines: bool, write: Callable[[str], None] | None = None,
                 log_every: float = 60.0, log_format: str = "text"):
        check_log_options(log_every, log_format)
        self.bar_on, self.lines, self.json = bar, lines or bar, log_format == "json"
        self.periodic = lines and not bar
        self.write, self.log_every = write, float(log_every)
        self._bar = None
        self.loop: Any = None
        self._window, self._warm = (time.monotonic(), 0, 0.0), False  # (start, steps, loss sum) since the last line
        self._due = time.monotonic() + self.log_every

    @classmethod
    def choose(cls, progress: bool | None, log: Callable[[str], None] | None, log_every: float = 60.0,
               log_format: str = "text") -> "TrainLog":
        """train()'s rule: a bar when asked (progress=True), or by default on a terminal with text lines
        and no `log`; lines otherwise, except that progress=False without `log` is silent."""
        if progress not in (None, True, False):
            raise TypeError(f"progress must be True, False or None, got {progress!r}")
        if log is not None and not callable(log):
            raise TypeError(f"log must be a function that takes each line (a str), got {log!r}")
        bar = progress is True or (progress is None and log is None and log_format == "text" and sys.stderr.isatty())
        lines = log is not None or (progress is None and not bar)
        return cls(bar, lines, log, log_every, log_format)

    # ------------------------------------------------------------ output

    def _out(self, text: str | None, event: str, **fields: Any) -> None:
        if not self.lines:
            return
        if self.json:
            line = json_line(event, **fields)
        elif text is None:
            return
        else:  # the date on lines printed to stderr; a program's `log` function adds its own if it wants one
            line = text if self.bar_on or self.write is not None else f"{datetime.now():%Y-%m-%d %H:%M:%S} {text}"
        if self.write is not None:
            self.write(line)
        elif self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            stderr_line(line)

    # ------------------------------------------------------------ events

    def start(self, loop: Any, info: dict[str, Any]) -> None:
        """The "what is used" line; `loop` is asked for its position when a progress line is due."""
        self.loop = loop
        now = time.monotonic()
        self._window, self._due = (now, 0, 0.0), now + self.log_every
        if info.get("distributed") and not self.json:  # (JSON has it in the start event)
            self._out(info["distributed"], "note")
        self._out(describe_start(info), "start", **info)

    def begin_epoch(self, epoch: int, step: int, steps_per_epoch: int, label: str) -> None:
        # The figures of a progress line cover training steps only: not the validation and saving
        # before this, nor the first step after it (which may compile the step: seconds, not ms).
        self._window, self._warm = (time.monotonic(), 0, 0.0), False
        if self.bar_on:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=steps_per_epoch, initial=step, desc=label, unit="step", leave=True,
                             dynamic_ncols=True, file=sys.stderr)
            self._bar_t = time.monotonic()

    def close_epoch(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def step(self, loss: float) -> None:
        """After every step: cheap unless a line is due."""
        if not self._warm:  # the epoch's first step: the window starts after it
            self._window, self._warm = (time.monotonic(), 0, 0.0), True
        else:
            t0, n, total = self._window
            self._window = (t0, n + 1, total + loss)
        if self._bar is not None:
            now = time.monotonic()
            loop = self.loop
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.3f}", bpc=f"{loss / loop.chars_per_token / LN2:.3f}",
                                  cps=f"{loop.chars_per_step / max(now - self._bar_t, 1e-9):,.0f}", refresh=False)
            self._bar_t = now
        elif self.periodic:
            now = time.monotonic()
            if now >= self._due and self._window[1]:
                self._progress(now)

    def _progress(self, now: float) -> None:
        t0, n, total = self._window
        self._window, self._due = (now, 0, 0.0), now + self.log_every
        loop = self.loop
        per_step = (now - t0) / max(n, 1)
        steps = loop.streams.num_batches
        loss = total / max(n, 1)
        fields = {
            "epoch": loop.epoch + 1, "step": loop.step, "steps_per_epoch": steps,
            "epoch_percent": round(100.0 * loop.step / steps, 2), "run_step": loop.run_step,
            "run_steps": loop.budget.total_steps, "loss": round(loss, 6),
            "bpc": round(loss / loop.chars_per_token / LN2, 6), "lr": loop.learning_rate(),
            "chars_per_sec": round(n * loop.chars_per_step / max(now - t0, 1e-9), 1),
            "eta_epoch_s": round((steps - loop.step) * per_step, 1),
            "eta_run_s": round(loop.budget.seconds_left(loop.run_step, loop.seconds(), per_step), 1),
            "elapsed_s": round(loop.seconds(), 1),
        }
        epochs = f"/{int(loop.budget.amount)}" if loop.budget.kind == "epochs" else ""
        text = (f"epoch {fields['epoch']}{epochs}  step {loop.step:,}/{steps:,} ({100 * loop.step / steps:.1f}%)  "
                f"loss {loss:.4f} ({fields['bpc']:.3f} bpc)  lr {fields['lr']:.3g}  "
                f"{fields['chars_per_sec']:,.0f} chars/s  ETA epoch {duration(fields['eta_epoch_s'])}, "
                f"run {duration(fields['eta_run_s'])}")
        self._out(text, "progress", **fields)

    def epoch(self, record: dict[str, Any], improved: bool, nats: str) -> None:
        self._out(describe_record(f"epoch {record['epoch']}:", record, improved, nats), "epoch",
                  **record, best=improved)

    def budget(self, record: dict[str, Any], improved: bool, nats: str, budget: str) -> None:
        where = f"budget of {budget} used at epoch {record['epoch']}, step {record['steps']:,}/{record['steps_per_epoch']:,}:"
        self._out(describe_record(where, record, improved, nats), "budget", **record, budget=budget, best=improved)

    def saved(self, snapshot: str, why: str, best: bool, epochs_done: int, step: int) -> None:
        """`why`: epoch, budget, save-every or interrupted; text shows only save-every (the others have their line)."""
        text = f"saved a mid-epoch snapshot: {snapshot}" if why == "save-every" else None
        self._out(text, "saved", snapshot=snapshot, why=why, best=best, epochs_done=epochs_done, step=step)

    def end(self, fields: dict[str, Any]) -> None:
        self._out(fields.pop("text"), "end", **fields)

    def interrupted(self, fields: dict[str, Any]) -> None:
        """JSON only: in text the command line prints the TrainingInterrupted message."""
        if self.json:
            self._out(None, "interrupted", **fields)


def describe_record(head: str, r: dict[str, Any], improved: bool, nats: str) -> str:
    val = "" if r.get("val_loss") is None else f"  val {r['val_loss']:.4f} {nats} ({r['val_bpc']:.3f} bpc)"
    return (f"{head} train {r['train_loss']:.4f} {nats} ({r['train_bpc']:.3f} bpc){val}"
            f"  {r['chars_per_sec']:,.0f} chars/s{'  *best' if improved else ''}")


def describe_start(i: dict[str, Any]) -> str:
    """The "what is used" line, from the start event's fields."""
    m, b, v = i["model"], i["budget"], i.get("validation")
    where = (f"resumed at epoch {i['resumed']['epoch']}, step {i['resumed']['step']:,}" if i.get("resumed")
             else "new run")
    lr = f"lr {i['lr']:g}" + (f" cosine to {i['lr'] * i['lr_final']:.3g}" if i["lr_decay"] == "cosine" else " constant")
    val = (f"validation {v['streams']} streams ({v['steps']:,} steps)" if v else "no validation")
    saves = f"a snapshot every {i['save_every']:g} min" if i["save_every"] else "snapshots at epoch ends"
    return (f"training {i['run']} ({where}, seed {i['seed']}): {m['cell'].upper()} "
            f"{','.join(map(str, m['units']))}, embed "
            f"{m['embed']}, {m['vocab_size']:,} tokens ({m['tokenizer']}), {m['parameters']:,} parameters, "
            f"{i['kernel']} kernel, {i['precision']} ({i['precision_why']}); "
            f"{i['streams']} streams x {i['seq_len']} = {i['chars_per_step']:,.0f} chars a step, "
            f"{i['steps_per_epoch']:,} steps an epoch; budget {b['text']}, {lr}; {val}; {saves}")


# ---------------------------------------------------------------- the fields of start and end, from the loop

def start_fields(loop: Any) -> dict[str, Any]:
    """What is used: the model, the kernel, the streams, the budget and plan, validation, saving."""
    m, t, b, v = loop.mcfg, loop.tcfg, loop.budget, loop.val_streams
    return {
        "run": str(loop.run_dir), "seed": t.seed,
        "resumed": None if loop.resumed_at is None else {"epoch": loop.resumed_at[0] + 1, "step": loop.resumed_at[1]},
        "model": {"cell": m.cell, "units": list(m.units), "embed": m.embed, "dropout": m.dropout, "vocab_size": m.vocab_size,
                  "tokenizer": loop.tokenizer.kind, "parameters": int(loop.model.count_params())},
        "kernel": loop.kernel, "precision": t.precision, "precision_why": loop.precision_why,
        "distributed": loop.engine.describe() if loop.engine.distributed else None,
        "streams": loop.streams.batch_size, "seq_len": t.seq_len, "chars_per_step": round(loop.chars_per_step, 1),
        "steps_per_epoch": loop.streams.num_batches,
        "budget": {"kind": b.kind, "amount": b.amount, "steps": b.total_steps, "text": b.describe()},
        "lr": t.lr, "lr_decay": t.lr_decay, "lr_final": t.lr_final,
        "validation": None if v is None else {"streams": v.batch_size, "steps": v.num_batches},
        "save_every": t.save_every, "log_every": loop.log.log_every,
    }


def end_fields(loop: Any, done_before: bool) -> dict[str, Any]:
    """How the run ended (its "text" is the plain line), or that its budget was already used."""
    b, seconds = loop.budget, loop.seconds()
    best = "" if loop.best is None else f"; best {'val' if loop.val_streams else 'train'} loss {loop.best:.4f} {loop._nats()}"
    text = (f"nothing to do: the budget of {b.describe()} is used; give a larger --epochs, --steps or --minutes "
            "to train more" if done_before else
            f"finished {loop.run_step:,} step{'s' * (loop.run_step != 1)} ({loop.run_step / b.steps_per_epoch:,.2f} epochs) in "
            f"{duration(seconds)} of training, the budget of {b.describe()}{best}")
    return {"text": text, "run": str(loop.run_dir), "epochs": len(loop.history), "run_step": loop.run_step,
            "seconds": round(seconds, 1), "best_loss": loop.best, "nothing_to_do": done_before}
