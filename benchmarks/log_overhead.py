"""Does the training log cost speed? The same short run with and without log lines, interleaved.

    python benchmarks/log_overhead.py                        # a 2x448 model (as in docs/training.md)
    python benchmarks/log_overhead.py --units 64 --rounds 5  # a small model, where a per-step cost shows most

Each round trains the same steps of tinyshakespeare (same seed, same model) once per mode, in turn:
- quiet: progress=False, no lines (the baseline of the round);
- lines: plain lines to a file, one every --log-every seconds (60, as the CLI's default);
- every: a line after every step (--log-every 0), the worst case;
- json: JSON lines after every step.
Time per step is measured from one step's end to the next (StepEnd callbacks), after --warmup
steps, so it holds everything the loop does per step, the log included. Figures: the median
step time over a round, as chars/s, and its ratio to quiet in the same round (the host's speed
moves with its neighbours; a ratio within one round does not). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "corpora" / "tinyshakespeare.txt"  # shipped with chargen
MODES = {"quiet": dict(progress=False), "lines": dict(log_every=60.0), "every": dict(log_every=0.0),
         "json": dict(log_every=0.0, log_format="json")}


class StepTimes:
    """Seconds between consecutive step ends, after `warmup` steps."""

    def __init__(self, warmup: int):
        self.warmup, self.last, self.times = warmup, None, []

    def on_step_end(self, info) -> None:
        now = time.perf_counter()
        if self.last is not None and info.step > self.warmup:
            self.times.append(now - self.last)
        self.last = now


def per_call_seconds(mode: str, calls: int = 200_000) -> float:
    """Seconds per TrainLog.step() call between lines (what every step pays), without any training."""
    from chargen.trainlog import TrainLog

    opts = MODES[mode]
    log = TrainLog(bar=False, lines=opts.get("progress") is not False, write=lambda line: None,
                   log_every=max(opts.get("log_every", 60.0), 3600.0), log_format=opts.get("log_format", "text"))
    log.step(1.0)  # the first step of an epoch only starts the window
    t0 = time.perf_counter()
    for _ in range(calls):
        log.step(1.0)
    return (time.perf_counter() - t0) / calls


def one_run(book: Path, mode: str, args, root: str, log_path: Path) -> float:
    """Median seconds per step of one run in `mode`."""
    import chargen

    timer = StepTimes(args.warmup)
    with open(log_path, "w") as log_file:
        def write(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()  # as stderr to a file is, line by line
        opts = dict(MODES[mode])
        if opts.get("progress") is not False:
            opts["log"] = write
        chargen.train(book, root=root, name=mode, overwrite=True, steps=args.warmup + args.steps, seed=1,
                      units=tuple(int(u) for u in args.units.split(",")), val_fraction=0.01, save_every=0,
                      callbacks=[timer], **opts)
    return statistics.median(timer.times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--units", default="448,448")
    p.add_argument("--steps", type=int, default=100, help="timed steps per run (after --warmup)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--book", default=str(CORPUS))
    args = p.parse_args(argv)
    modes = args.modes.split(",")
    if modes[0] != "quiet" or not set(modes) <= set(MODES):
        sys.exit(f"--modes must start with quiet (the baseline) and name only {', '.join(MODES)}")
    from chargen._quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    from chargen.config import TrainConfig

    chars_per_step = TrainConfig().batch_size * TrainConfig().seq_len  # the defaults these runs use
    print(f"{Path(args.book).name}, units {args.units}, {args.steps} timed steps after {args.warmup}, "
          f"{args.rounds} rounds, modes {', '.join(modes)}", flush=True)
    print("per step, between lines: " + ", ".join(f"{m} {per_call_seconds(m) * 1e6:.2f} us" for m in ("quiet", "lines")),
          flush=True)
    ratios: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as root:
        for r in range(1, args.rounds + 1):
            step = {m: one_run(Path(args.book), m, args, root, Path(root) / f"{m}.log") for m in modes}
            cells = []
            for m in modes:
                ratios[m].append(step["quiet"] / step[m])
                cells.append(f"{m} {chars_per_step / step[m]:,.0f} chars/s ({ratios[m][-1]:.3f}x)")
            print(f"round {r}: " + ";  ".join(cells), flush=True)
    print("median ratio to quiet (chars/s): " + ", ".join(f"{m} {statistics.median(ratios[m]):.3f}" for m in modes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
