"""Time to quality on tinyshakespeare: the validation loss reached within a wall-clock budget, per recipe.

    python benchmarks/shakespeare.py                                  # chargen's defaults, 10 minutes
    python benchmarks/shakespeare.py --variants defaults,fp32,keras   # and reference points, in turn
    python benchmarks/shakespeare.py --minutes 10 --units 512,512 --dropout 0.1    # a recipe to try
    python benchmarks/shakespeare.py --cell gru                       # every variant with GRU layers

Each variant is one `chargen.train(..., minutes=M)` run from seed 1: the cosine learning-rate curve
spans the time budget (chargen/budget.py), and when the budget ends mid-epoch the run validates on
the held-out last 10% of the book, so the last figure is the model as it stands at M minutes. The
budget counts the run's wall-clock seconds from its first step (validations and saves included;
not the start-up before it, about 5 s), and the final validation comes after it: the printed
wall time says how long the whole run took. Variants:

    defaults  chargen's defaults (bf16 products where the CPU has native BF16: --precision auto)
    fp32      the defaults in float32 (--precision fp32): what bf16 buys
    keras     the stock Keras layer (--kernel keras, fp32): what chargen's kernel buys
    gru       --cell gru with the defaults otherwise

Options given on the command line (--units, --lr, ...) apply to every variant. The results depend
on the machine's speed at the time: the benchmark prints chars/s beside every loss, and the same
run on a busier machine does fewer steps.
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
TARGET = 1.45  # nats: issue #15's target for the defaults in 10 minutes on 2 cores
VARIANTS = {"defaults": {}, "fp32": {"precision": "fp32"}, "keras": {"kernel": "keras", "precision": "fp32"},
            "gru": {"cell": "gru"}}
OVERRIDES = {"units": str, "embed": int, "batch_size": int, "seq_len": int, "lr": float, "lr_final": float,
             "dropout": float, "precision": str, "cell": str, "kernel": str}


def run_variant(name: str, options: dict, minutes: float) -> dict:
    import chargen

    seen: list[tuple[dict, float]] = []
    t0 = time.perf_counter()

    def epoch_end(info) -> None:
        seen.append((info.record, time.perf_counter() - t0))
        r = info.record
        print(f"  {name}: epoch {r['epoch']}: val {r['val_loss']:.4f} nats ({r['val_bpc']:.3f} bpc), "
              f"{r['chars_per_sec']:,.0f} chars/s, {(time.perf_counter() - t0) / 60:.1f} min", flush=True)

    with tempfile.TemporaryDirectory() as root:
        result = chargen.train(SHAKESPEARE, root=root, name="bench", minutes=minutes, seed=1, progress=False,
                               callbacks=[epoch_end], **options)
        wall = time.perf_counter() - t0
        import json

        config = json.loads((Path(root) / "bench" / "config.json").read_text())
    last = result.history[-1]
    steps = sum(h["steps"] for h in result.history)
    per_epoch = last.get("steps_per_epoch") or last["steps"]
    return {"name": name, "val_loss": last["val_loss"], "val_bpc": last["val_bpc"], "steps": steps,
            "epochs": steps / per_epoch, "chars_per_sec": sum(h["chars_per_sec"] * h["steps"] for h in result.history)
            / max(steps, 1), "wall": wall, "model": config["model"], "precision": config["train"]["precision"],
            "kernel": config["train"]["kernel"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="the time budget of each run (default 10)")
    ap.add_argument("--variants", default="defaults", help=f"comma-separated, of {', '.join(VARIANTS)}")
    for name, kind in OVERRIDES.items():
        ap.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    args = ap.parse_args()
    from chargen._quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    common = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None}
    if "units" in common:
        common["units"] = tuple(int(u) for u in common["units"].split(","))
    results = []
    for name in args.variants.split(","):
        if name not in VARIANTS:
            sys.exit(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        options = {**common, **VARIANTS[name]}
        print(f"{name}: training {args.minutes:g} minutes with {options or 'the defaults'}", flush=True)
        results.append(run_variant(name, options, args.minutes))
    print(f"\ntinyshakespeare, {args.minutes:g}-minute budget, seed 1, validation on the last 10% "
          f"({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores):")
    print(f"{'variant':<10} {'model':<26} {'steps':>6} {'epochs':>6} {'chars/s':>8} {'val nats':>9} {'bpc':>6} "
          f"{'wall min':>8}")
    for r in results:
        m = r["model"]
        model = f"{m.get('cell', 'lstm')} {','.join(map(str, m['units']))} {r['precision']} {r['kernel']}"
        print(f"{r['name']:<10} {model:<26} {r['steps']:>6,} {r['epochs']:>6.2f} {r['chars_per_sec']:>8,.0f} "
              f"{r['val_loss']:>9.4f} {r['val_bpc']:>6.3f} {r['wall'] / 60:>8.1f}")
    first = results[0]
    verdict = "met" if first["val_loss"] <= TARGET else "not met"
    print(f"{first['name']}: {first['val_loss']:.4f} nats in {args.minutes:g} min; target <= {TARGET} nats: {verdict}")
    for r in results[1:]:
        print(f"{r['name']}: {r['val_loss'] - first['val_loss']:+.4f} nats against {first['name']}, "
              f"{r['chars_per_sec'] / first['chars_per_sec']:.2f}x its chars/s")


if __name__ == "__main__":
    main()
