"""SIGTERM and SIGHUP stop a run as Ctrl-C does (finish the step, save, print the resume command, exit
128 + the signal), a second signal stops at once, and under nohup a hangup is ignored. Real `chargen
train` processes, real signals, each sent once the log shows training under way (never after a sleep)."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys

import pytest

from chargen import checkpoint as ckpt

from runs import PROGRESS, TINY_FLAGS, assert_same_run, cli, last_line, start, wait_for_line

RUN = ["--name", "run", "--root", "ck", "--epochs", 3, "--seed", 1, "--log-every", 0, *TINY_FLAGS]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_term_and_hup_save_print_the_resume_command_and_exit_128_plus_the_signal(
        tmp_path, small_text, reference_run, sig, code):
    (tmp_path / "book.txt").write_text(small_text, encoding="utf-8")
    log = tmp_path / "train.log"
    p = start("train", "book.txt", *RUN, cwd=tmp_path, log=log)
    wait_for_line(p, log, PROGRESS)  # training is under way
    p.send_signal(sig)
    assert p.wait(timeout=300) == code
    line = last_line(log.read_text(), p.returncode, code)
    name = signal.Signals(sig).name
    progress = json.loads((ckpt.snapshot_dir(tmp_path / "ck" / "run", "last") / "progress.json").read_text())
    assert (progress["epoch"], progress["step"]) != (0, 0) and progress["epoch"] < 3  # the step in flight finished
    assert line.startswith(f"chargen: interrupted by {name} at epoch {progress['epoch'] + 1}, step {progress['step']}; ")
    command = line.split("Resume with: ", 1)[1]
    assert command == "chargen train book.txt --name run --root ck --resume"

    r = cli(*shlex.split(command)[1:], cwd=tmp_path)  # exactly what the message says, from the same folder
    assert r.returncode == 0, r.stderr
    assert_same_run(reference_run(epochs=3, seed=1), ckpt.snapshot_dir(tmp_path / "ck" / "run", "last"))


SLOW_STEP = """
import sys, time
import chargen.cli as cli, chargen.loop as loop

first = loop.TrainingLoop._on_signal
def on_signal(self, signum):
    first(self, signum)
    print("first signal received", file=sys.stderr, flush=True)
loop.TrainingLoop._on_signal = on_signal

class SlowStep:  # a step that is still running when the signals come, as a big model's would be
    def on_step_end(self, info):
        if (info.epoch, info.step) == (1, 5):
            print("a slow step", file=sys.stderr, flush=True)
            time.sleep(600)

callbacks = cli._train_callbacks
cli._train_callbacks = lambda args: callbacks(args) + [SlowStep()]
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_second_signal_stops_at_once_and_last_stays_complete(tmp_path, small_text):
    (tmp_path / "book.txt").write_text(small_text, encoding="utf-8")
    log, run = tmp_path / "train.log", tmp_path / "ck" / "run"
    p = start(cwd=tmp_path, log=log, argv=[sys.executable, "-c", SLOW_STEP, "train", "book.txt", *map(str, RUN)])
    wait_for_line(p, log, "a slow step")  # 5 steps into epoch 2; epoch 1 is saved
    saved = ckpt.read_pointer(run, "last")
    p.send_signal(signal.SIGTERM)
    wait_for_line(p, log, "first signal received")
    p.send_signal(signal.SIGTERM)  # while the step (600 s here) is still running
    assert p.wait(timeout=120) == 143  # at once, not after the step
    text = log.read_text().replace("a slow step\n", "").replace("first signal received\n", "")
    assert last_line(text, p.returncode, 143) == "chargen: interrupted (SIGTERM)"
    assert ckpt.read_pointer(run, "last") == saved and os.listdir(run / "snapshots") == [os.path.basename(saved)]
    ckpt.read_snapshot(ckpt.snapshot_dir(run, "last"))  # complete


def test_under_nohup_a_hangup_is_ignored_and_the_json_log_is_complete(tmp_path, small_text):
    """nohup ignores SIGHUP and chargen keeps it ignored; the JSON log is one event per line, start to end."""
    (tmp_path / "book.txt").write_text(small_text, encoding="utf-8")
    log, run = tmp_path / "train.jsonl", tmp_path / "ck" / "run"
    steps = 80  # one epoch and a part of the next: the budget ends mid-epoch
    args = ["train", "book.txt", "--name", "run", "--root", "ck", "--steps", steps, "--seed", 1, "--log-every", 0,
            "--log-format", "json", "--sample-every", 1, "--sample-length", 20, *TINY_FLAGS]
    p = start(cwd=tmp_path, log=log, argv=["nohup", sys.executable, "-m", "chargen", *map(str, args)])
    wait_for_line(p, log, '"event": "progress"')
    p.send_signal(signal.SIGHUP)  # as when the terminal of a nohup'ed job closes
    assert p.wait(timeout=300) == 0
    text = log.read_text()
    lines = [line for line in text.splitlines() if not line.startswith("nohup:")]  # nohup's own notice
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    kinds = [e["event"] for e in events]
    n = events[0]["steps_per_epoch"]
    assert kinds == (["start"] + ["progress"] * (n - 1) + ["saved", "epoch", "sample"] + ["progress"] * (steps - n - 1)
                     + ["saved", "budget", "end"]), kinds
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$", e["time"]) for e in events)
    start_event = events[0]
    assert start_event["budget"] == {"kind": "steps", "amount": steps, "steps": steps, "text": f"{steps} steps (1.2 epochs)"}
    assert start_event["model"]["units"] == [24, 16] and start_event["kernel"] == "fast"
    progress = [e for e in events if e["event"] == "progress"]
    assert [(e["epoch"], e["step"]) for e in progress] == [(1, s) for s in range(2, n + 1)] + [
        (2, s) for s in range(2, steps - n + 1)]
    for e in progress:
        assert e["run_step"] == (e["epoch"] - 1) * n + e["step"] and e["run_steps"] == steps
        for key in ("loss", "bpc", "lr", "chars_per_sec", "eta_epoch_s", "eta_run_s", "elapsed_s", "epoch_percent"):
            assert isinstance(e[key], float) and e[key] >= 0, (key, e)
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    epoch, budget = events[kinds.index("epoch")], events[kinds.index("budget")]
    assert {k: epoch[k] for k in rows[0]} == rows[0] and epoch["best"] is True
    assert {k: budget[k] for k in rows[1]} == rows[1] and rows[1]["partial"] and rows[1]["steps"] == steps - n
    assert events[kinds.index("sample")]["epoch"] == 1 and len(events[kinds.index("sample")]["text"]) == 20
    saved = [e for e in events if e["event"] == "saved"]
    assert [(e["why"], e["epochs_done"], e["step"]) for e in saved] == [("epoch", 1, 0), ("budget", 1, steps - n)]
    assert events[-1]["run_step"] == steps and events[-1]["nothing_to_do"] is False


def test_json_errors_are_json_too(tmp_path, small_text):
    (tmp_path / "book.txt").write_text(small_text, encoding="utf-8")
    r = cli("train", "book.txt", "--log-format", "json", "--log-every", -1, cwd=tmp_path,
            stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    event = json.loads(r.stderr)
    assert event["event"] == "error" and event["exit_code"] == 2
    assert event["message"] == ("chargen: error: --log-every must be a number of seconds >= 0 (0: a line after every "
                                "step), got -1.0")


def test_a_signal_during_validation_stops_without_waiting_for_it(tmp_path, small_text, reference_run, monkeypatch):
    """Validating a big book takes minutes; a SIGTERM then stops before the epoch's end, which the resume does."""
    import chargen
    from chargen import loop
    from chargen.errors import TrainingInterrupted

    from conftest import TINY
    from test_budgets import steps_per_epoch

    book = tmp_path / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    real_compile = loop.TrainingLoop._compile

    def compile_(self, tf):
        train_step, eval_step = real_compile(self, tf)

        sent = []

        def eval_signalled(x, y):
            if not sent:
                sent.append(os.kill(os.getpid(), signal.SIGTERM))  # a real signal, while epoch 1 is being validated
            return eval_step(x, y)
        return train_step, eval_signalled

    monkeypatch.setattr(loop.TrainingLoop, "_compile", compile_)
    n, before = steps_per_epoch(small_text), signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match=f"interrupted by SIGTERM at epoch 1, step {n}; ") as stopped:
        chargen.train(book, root=tmp_path / "ck", epochs=2, seed=1, progress=False, **TINY)
    assert stopped.value.signum == signal.SIGTERM
    run = tmp_path / "ck" / "book"
    assert json.loads((ckpt.snapshot_dir(run, "last") / "progress.json").read_text())["step"] == n
    assert (ckpt.snapshot_dir(run, "last") / "history.jsonl").read_text() == ""  # the epoch's end was not recorded
    assert signal.getsignal(signal.SIGTERM) == before  # the program's handler is back
    monkeypatch.undo()
    chargen.train(book, root=tmp_path / "ck", resume=True, progress=False)
    assert_same_run(reference_run(epochs=2, seed=1), ckpt.snapshot_dir(run, "last"))
