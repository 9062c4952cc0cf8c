"""Training curves from a run's history.jsonl: reading it, a table, and a small terminal chart.

Named curves.py, not history.py: `chargen.history` is a function, and importing a submodule of
the same name would replace it on the package.

Reading needs neither TensorFlow nor the weights, so `chargen history` is instant and works on
a run that is still training (history.jsonl is replaced atomically after every epoch).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from chargen import checkpoint as ckpt
from chargen.errors import ChargenError, CheckpointError

# key -> may it be missing or null (val_* without validation; lr and steps in runs from older chargen)
FIELDS = {"epoch": False, "train_loss": False, "train_bpc": False, "val_loss": True, "val_bpc": True,
          "steps": True, "chars_per_sec": True, "seconds": True, "lr": True}
CHART_HEIGHT = 10
CHART_WIDTH = 60
TRAIN_MARK, VAL_MARK, BOTH_MARK = "●", "○", "◉"


def history(name: str | os.PathLike[str] | None = None, root: str | os.PathLike[str] = "checkpoints") -> list[dict[str, Any]]:
    """The per-epoch records of a run (a name under `root`, a folder, or None for the newest run).

    Each is the dict train() wrote: epoch, steps, train_loss and val_loss (nats per token),
    train_bpc and val_bpc (bits per character), chars_per_sec, seconds, lr. An empty list means no
    epoch has finished yet. When a --steps or --minutes budget ended mid-epoch, the last row is
    that epoch so far, with "partial": True and "steps_per_epoch" (a resume replaces it).
    """
    return run_history(ckpt.resolve_run(name, root))


def run_history(run: Path) -> list[dict[str, Any]]:
    """The records in a run (or snapshot) folder; [] for a run whose first epoch has not finished."""
    path = run / "history.jsonl"
    if not path.exists() and (run / "config.json").exists():  # written when training starts
        return []
    return read_history(path)


def _last_copy(path: Path) -> Path | None:
    """The copy of a run's history.jsonl in the snapshot `last` names (written with every snapshot, before the
    run's own), if there is one."""
    try:
        if ckpt.pointed_snapshot(path.parent, "last") is None:  # checked: inside the run
            return None
    except ChargenError:
        return None
    copy = path.parent / ckpt.read_pointer(path.parent, "last") / path.name  # as the user named the run
    return copy if copy.exists() else None


def read_history(path: Path) -> list[dict[str, Any]]:
    """Parse and check a history.jsonl; a missing, unreadable or damaged file is a CheckpointError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; {path.parent} is not a chargen run folder "
                              "(no history.jsonl or config.json)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read it ({e})") from None
    hint = f"the last snapshot holds a copy: {copy}" if (copy := _last_copy(path)) else "the file is damaged"
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise CheckpointError(f"{path}: line {n} is not valid JSON ({e}); {hint}") from None
        problem = _row_problem(row)
        if problem:
            raise CheckpointError(f"{path}: line {n} {problem}; {hint}")
        if rows and row["epoch"] <= rows[-1]["epoch"]:
            raise CheckpointError(f"{path}: line {n} has epoch {row['epoch']} after epoch {rows[-1]['epoch']}; {hint}")
        rows.append(row)
    return rows


def _row_problem(row: Any) -> str | None:
    if not isinstance(row, dict):
        return f"is not a JSON object (got {type(row).__name__})"
    if row.get("partial", False) is not False:  # a budget's end mid-epoch: the steps done of steps_per_epoch
        per_epoch = row.get("steps_per_epoch")
        if row["partial"] is not True or type(per_epoch) is not int or per_epoch < 1:
            return f"has partial {row['partial']!r} with steps_per_epoch {per_epoch!r}, not true and a positive integer"
    for key, optional in FIELDS.items():
        value = row.get(key)
        if value is None:
            if not optional:
                return f"has no {key!r}"
            continue
        if key == "epoch":
            if type(value) is not int or value < 1:
                return f"has epoch {value!r}, not a positive integer"
        elif type(value) not in (int, float) or not math.isfinite(value):
            return f"has {key} {value!r}, not a finite number"
    return None


def _done(row: dict[str, Any]) -> str:
    return f"{100 * (row.get('steps') or 0) / row['steps_per_epoch']:.0f}%"


def epoch_label(row: dict[str, Any]) -> str:
    """'3', or '3 (17%)' for the part of epoch 3 done when a budget ended in it."""
    return f"{row['epoch']} ({_done(row)})" if row.get("partial") else str(row["epoch"])


def describe(rows: list[dict[str, Any]]) -> str:
    """'4 epochs', or '2 epochs and 17% of epoch 3' ('20% of epoch 1') when the run's budget ended mid-epoch."""
    whole = len(rows) - bool(rows and rows[-1].get("partial"))
    text = f"{whole} epoch{'s' * (whole != 1)}"
    if whole < len(rows):
        part = f"{_done(rows[-1])} of epoch {rows[-1]['epoch']}"
        text = f"{text} and {part}" if whole else part
    return text


def best_epoch(rows: list[dict[str, Any]]) -> int | None:
    """The epoch the run's `best` snapshot holds: the first lowest validation loss (training loss without validation)."""
    scored = [(r["val_loss"] if r.get("val_loss") is not None else r["train_loss"], r["epoch"]) for r in rows]
    return min(scored, key=lambda s: s[0])[1] if scored else None


# ---------------------------------------------------------------- the table

def table(rows: list[dict[str, Any]], title: str | None = None, compact: bool = False):
    """A rich Table: one row per epoch, the best one marked. `compact`: no borders, for narrow terminals."""
    from rich import box
    from rich.table import Table

    best = best_epoch(rows)
    cells = [[epoch_label(r), _fmt(r.get("steps"), "{:,}"), _fmt(r["train_loss"], "{:.4f}"),
              _fmt(r["train_bpc"], "{:.3f}"), _fmt(r.get("val_loss"), "{:.4f}"), _fmt(r.get("val_bpc"), "{:.3f}"),
              _fmt(r.get("chars_per_sec"), "{:,.0f}"), _fmt(r.get("seconds"), "{:,.1f}"), _fmt(r.get("lr"), "{:.3g}"),
              "*" if r["epoch"] == best else ""] for r in rows]
    caption = "loss in nats per token, bpc in bits per character; * the best snapshot"
    if rows and rows[-1].get("partial"):
        caption += "; (%): the part of an epoch done when the budget ended"
    t = Table(title=title, caption=caption,
              **({"box": box.SIMPLE_HEAD, "pad_edge": False, "collapse_padding": True} if compact else {}))
    names = ("epoch", "steps", "train loss", "train bpc", "val loss", "val bpc", "chars/s", "seconds", "lr", "best")
    for i, name in enumerate(names):
        # On a narrow terminal the headers wrap, never the numbers: min_width is the widest value
        t.add_column(name, justify="left" if name == "best" else "right", min_width=max(len(c[i]) for c in cells))
    for c in cells:
        t.add_row(*c)
    return t


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else spec.format(value)


# ---------------------------------------------------------------- the chart

def chart(rows: list[dict[str, Any]], width: int = CHART_WIDTH, height: int = CHART_HEIGHT) -> str:
    """Train (●) and validation (○) bits per character by epoch, as plain text (◉ where they meet)."""
    return chart_text(rows, width, height).plain


def chart_text(rows: list[dict[str, Any]], width: int = CHART_WIDTH, height: int = CHART_HEIGHT):
    """The same chart as rich Text, coloured where the console supports it (rich drops colour elsewhere).

    One column per epoch when they fit in `width`, stretched (values interpolated between epochs)
    to fill it when there are few, averaged over groups of epochs when there are more.
    """
    from rich.text import Text

    if not rows:
        return Text("no epoch finished yet")
    height, width = max(int(height), 2), max(int(width), 1)
    series = [("train", [r["train_bpc"] for r in rows], TRAIN_MARK, "cyan")]
    if all(r.get("val_bpc") is not None for r in rows):
        series.append(("val", [r["val_bpc"] for r in rows], VAL_MARK, "magenta"))
    columns = 1 if len(rows) == 1 else width
    resampled = [(name, resample(values, columns), mark, style) for name, values, mark, style in series]
    lo = min(min(v) for _, v, _, _ in resampled)
    hi = max(max(v) for _, v, _, _ in resampled)
    if hi - lo < 1e-9:  # one epoch, or a flat curve: centre it in a small band
        pad = max(abs(hi) * 0.05, 1e-3)
        lo, hi = lo - pad, hi + pad
    grid: list[list[set[str]]] = [[set() for _ in range(columns)] for _ in range(height)]
    for name, values, _, _ in resampled:
        for x, v in enumerate(values):
            grid[round((v - lo) / (hi - lo) * (height - 1))][x].add(name)
    marks = {name: (mark, style) for name, _, mark, style in series}
    out = Text()
    for y in range(height - 1, -1, -1):
        label = f"{lo + (hi - lo) * y / (height - 1):7.3f} " if y in (0, height - 1, (height - 1) // 2) else " " * 8
        out.append(label + ("┤" if label.strip() else "│"))
        for cell in grid[y]:
            if len(cell) > 1:
                out.append(BOTH_MARK, style="bold")
            elif cell:
                mark, style = marks[next(iter(cell))]
                out.append(mark, style=style)
            else:
                out.append(" ")
        out.append("\n")
    out.append(" " * 8 + "└" + "─" * columns + "\n")
    first, last = f"epoch {rows[0]['epoch']}", str(rows[-1]["epoch"])
    axis = first if len(rows) == 1 else first + last.rjust(max(columns - len(first), len(last) + 1))
    out.append(" " * 9 + axis + "\n")
    out.append(" " * 9 + "bits per character: ")
    for i, (name, _, mark, style) in enumerate(series):
        out.append(("  " if i else "") + mark, style=style)
        out.append(f" {name}")
    if len(series) > 1:
        out.append(f"  {BOTH_MARK} both")
    return out


def resample(values: list[float], columns: int) -> list[float]:
    """`values` (one per epoch) as `columns` points: linear interpolation when stretching, group means when shrinking."""
    n = len(values)
    if n == 1 or columns == 1:
        return [values[-1]] * columns if n == 1 else [sum(values) / n]
    if columns >= n:
        out = []
        for x in range(columns):
            pos = x * (n - 1) / (columns - 1)
            i = min(int(pos), n - 2)
            out.append(values[i] + (values[i + 1] - values[i]) * (pos - i))
        return out
    groups = [values[x * n // columns:(x + 1) * n // columns] for x in range(columns)]
    return [sum(g) / len(g) for g in groups]
