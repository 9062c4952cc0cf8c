"""Time to quality on tinyshakespeare: one planned run, the best validation loss within a wall-clock budget.

    python benchmarks/shakespeare.py --minutes 10            # the recommended CPU recipe: defaults, 3 epochs
    python benchmarks/shakespeare.py --minutes 12 --units 512,512
    python benchmarks/shakespeare.py --minutes 12 --units 512,512 --lr-decay none
    python benchmarks/shakespeare.py --minutes 10 --cell gru        # the GRU on the same budget

Trains one run of --epochs epochs (default 3: what fits 10 minutes at 2x448 on 2 cores) with
chargen's defaults unless overridden; the default cosine learning-rate curve spans the whole run,
so the run is planned, not cut short. Validation on the held-out last 10% runs after each epoch;
only epochs that end within the budget count. Prints each epoch's validation loss in nats and
bits per character with the elapsed time, the best within the budget, and when it first went
below 2.0, 1.8 and 1.6 nats (at epoch granularity).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SHAKESPEARE = Path(__file__).resolve().parents[1] / "corpora" / "tinyshakespeare.txt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--cell", default="lstm", choices=("lstm", "gru"), help="the recurrent cell (default lstm)")
    ap.add_argument("--units", default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--lr-decay", default=None, choices=("none", "cosine"))
    ap.add_argument("--epochs", type=int, default=3, help="plan the run as this many epochs (default 3)")
    args = ap.parse_args()
    from chargen._quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    import chargen

    opts = {k: v for k, v in dict(batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
                                  lr_decay=args.lr_decay).items() if v}
    opts["cell"] = args.cell
    if args.units:
        opts["units"] = tuple(int(u) for u in args.units.split(","))
    budget = args.minutes * 60
    crossed: dict[float, float] = {}
    best = float("inf")
    def seen(h: dict, elapsed: float) -> None:
        nonlocal best
        if elapsed <= budget:
            best = min(best, h["val_loss"])
            for level in (2.0, 1.8, 1.6):
                if h["val_loss"] < level and level not in crossed:
                    crossed[level] = elapsed
        print(f"epoch {h['epoch']}: val {h['val_loss']:.4f} nats ({h['val_bpc']:.3f} bpc), "
              f"{h['chars_per_sec']:,.0f} chars/s, {elapsed / 60:.1f} min elapsed"
              f"{'' if elapsed <= budget else ' (over the budget: not counted)'}", flush=True)

    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        chargen.train(SHAKESPEARE, root=root, name="bench", epochs=args.epochs, seed=1, progress=False,
                      callbacks=[lambda info: seen(info.record, time.perf_counter() - t0)], **opts)
    print(f"{args.cell}: best val loss within {args.minutes:g} min: {best:.4f} nats "
          f"({best / 0.693147:.3f} bpc); target <= 1.50 nats: {'met' if best <= 1.5 else 'not met'}")
    for level in (2.0, 1.8, 1.6):
        when = f"{crossed[level] / 60:.1f} min" if level in crossed else "not reached"
        print(f"first below {level} nats: {when}")


if __name__ == "__main__":
    main()
