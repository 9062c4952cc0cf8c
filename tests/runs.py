"""Helpers for tests of long runs: `chargen train` as a real process with its log in a file, reading
the log as it grows (never a sleep), and comparing two runs' snapshots bit for bit."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from conftest import ROOT, TINY

TINY_FLAGS = ["--units", ",".join(map(str, TINY["units"])), "--embed", str(TINY["embed"]),
              "--batch-size", str(TINY["batch_size"]), "--seq-len", str(TINY["seq_len"])]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
ENV.pop("TF_CONFIG", None)

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "  # a plain log line starts with the local date and time
PROGRESS_BODY = (r"epoch (?P<epoch>\d+)(/\d+)?  step (?P<step>[\d,]+)/(?P<of>[\d,]+) \((?P<pct>[\d.]+)%\)  "
                      r"loss (?P<loss>[\d.]+) \((?P<bpc>[\d.]+) bpc\)  lr (?P<lr>[\d.e+-]+)  (?P<cps>[\d,]+) chars/s  "
                 r"ETA epoch (?P<eta_epoch>\w+), run (?P<eta_run>\w+)$")
PROGRESS = re.compile(STAMP + PROGRESS_BODY)  # a progress line on stderr (a `log` function gets it without the date)
TIMING = ("chars_per_sec", "seconds")  # the only history fields that may differ between equal runs


def chargen_argv(*args) -> list[str]:
    return [sys.executable, "-m", "chargen", *map(str, args)]


def cli(*args, cwd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(chargen_argv(*args), cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600, **kw)


def start(*args, cwd: Path, log: Path, argv: list[str] | None = None, **kw) -> subprocess.Popen:
    """A real `chargen` process (or `argv`) whose stderr goes to the file `log`, as under nohup or a scheduler."""
    with open(log, "w") as err:
        return subprocess.Popen(argv or chargen_argv(*args), cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=err,
                                **kw)


def wait_for_line(proc: subprocess.Popen, log: Path, pattern: str | re.Pattern, timeout: float = 300) -> str:
    """The first line of `log` that matches `pattern`, waiting for it to be written (fails if the process ends first)."""
    rx = re.compile(pattern)
    end = time.monotonic() + timeout
    while True:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        found = next((line for line in lines if rx.search(line)), None)
        if found is not None:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (rc {proc.returncode}) before a line like {rx.pattern!r}:\n"
                                 + "\n".join(lines[-20:]))
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"timed out waiting for a line like {rx.pattern!r}")
        time.sleep(0.02)


def last_line(text: str, rc: int, code: int) -> str:
    """A run that stopped: exit `code`, no traceback, and its final line (the error or the interruption),
    after nothing but plain log lines."""
    assert rc == code, (rc, text)
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert all(re.match(STAMP, line) for line in lines[:-1]), text
    return lines[-1]


def arrays(snapshot: Path, name: str) -> dict[str, np.ndarray]:
    """A snapshot's array file (model, optimizer or train_state .safetensors) by name, read as any tool reads it."""
    from safetensors.numpy import load_file

    return load_file(snapshot / name)


def history(snapshot: Path) -> list[dict]:
    return [json.loads(line) for line in (snapshot / "history.jsonl").read_text().splitlines()]


def untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def assert_same_run(a: Path, b: Path) -> None:
    """Two snapshots of the same run, bit for bit: weights, optimizer, the training rows' state and RNG,
    the position in the book, and the history (all but its timings)."""
    for name in ("model.safetensors", "optimizer.safetensors", "train_state.safetensors"):
        xs, ys = arrays(a, name), arrays(b, name)
        assert sorted(xs) == sorted(ys), name
        for key in xs:
            np.testing.assert_array_equal(xs[key], ys[key], err_msg=f"{name} {key}")
    assert untimed(history(a)) == untimed(history(b))
    pa, pb = (json.loads((s / "progress.json").read_text()) for s in (a, b))
    for p in (pa, pb):
        p.pop("seconds", None)
        p["partial"].pop("seconds", None)
    assert pa == pb


class StepClock:
    """loop.clock for tests: one second per training step, so budgets and --save-every count steps."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def on_step_end(self, info) -> None:
        self.now += 1.0
