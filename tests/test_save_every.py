"""--save-every: resumable snapshots in the middle of an epoch ('last' moves, 'best' stays with validated
ones), and a crash after one loses only the steps since: the resumed run equals an uninterrupted one."""

import signal
import subprocess

import chargen
from chargen import checkpoint as ckpt

from conftest import TINY
from runs import TINY_FLAGS, assert_same_run, cli, start, wait_for_line
from test_budgets import steps_per_epoch


class Crash(Exception):
    """Stands for a crash or kill -9 in the middle of an epoch: nothing is saved on the way out."""


class Watch:
    """Records where `last` and `best` point after every step, and crashes after run step `crash_at`."""

    def __init__(self, run, crash_at):
        self.run, self.crash_at, self.seen = run, crash_at, []

    def on_step_end(self, info):
        self.seen.append(tuple(ckpt.read_pointer(self.run, n) for n in ("last", "best")))
        if info.epoch * info.num_batches + info.step == self.crash_at:
            raise Crash


def test_mid_epoch_snapshots_move_last_not_best_and_resume_bit_for_bit(tmp_path, small_text, step_clock,
                                                                       reference_run):
    book = tmp_path / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    run = tmp_path / "ck" / "book"
    n = steps_per_epoch(small_text)
    watch = Watch(run, crash_at=n + 8)  # 8 steps into epoch 2
    try:
        chargen.train(book, root=tmp_path / "ck", progress=False, epochs=2, seed=1, save_every=0.05,  # 3 steps
                      callbacks=[step_clock, watch], **TINY)
        raise AssertionError("the crash did not happen")
    except Crash:
        pass
    lasts = [last for last, _ in watch.seen if last]
    # every 3 s = 3 steps after the previous save; an epoch's end saves and starts the count again
    mid = [f"snapshots/e0000-s{s:06d}" for s in range(3, n, 3)] + ["snapshots/e0001-s000000", "snapshots/e0001-s000003",
                                                                    "snapshots/e0001-s000006"]
    assert list(dict.fromkeys(lasts)) == mid
    assert {best for _, best in watch.seen} == {None, "snapshots/e0001-s000000"}  # only the validated epoch end
    assert ckpt.read_pointer(run, "last") == "snapshots/e0001-s000006"  # the crash lost 2 steps

    resumed = chargen.train(book, root=tmp_path / "ck", resume=True, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert_same_run(reference_run(epochs=2, seed=1), ckpt.snapshot_dir(run, "last"))


def test_kill_9_after_a_mid_epoch_snapshot_then_resume_equals_an_uninterrupted_run(tmp_path, small_text,
                                                                                    reference_run):
    """A real process saving every 0.12 s, killed at whatever step: the resume from its `last` is exact."""
    (tmp_path / "book.txt").write_text(small_text, encoding="utf-8")
    log, run = tmp_path / "train.log", tmp_path / "ck" / "run"
    args = ["train", "book.txt", "--name", "run", "--root", "ck", "--epochs", 2, "--seed", 1, "--save-every", 0.002,
            *TINY_FLAGS]
    p = start(*args, cwd=tmp_path, log=log)
    wait_for_line(p, log, r"saved a mid-epoch snapshot: ck/run/snapshots/e0000-s\d{6}$")
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    snap = ckpt.snapshot_dir(run, "last")
    assert not snap.name.endswith("-s000000")  # the run is resumed from the middle of an epoch
    r = cli(*args, "--resume", cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert_same_run(reference_run(epochs=2, seed=1), ckpt.snapshot_dir(run, "last"))
