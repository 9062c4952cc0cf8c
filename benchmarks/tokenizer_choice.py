"""Char or BPE? Validation bits per character on tinyshakespeare for the same wall-clock budget.

    python benchmarks/tokenizer_choice.py --minutes 5                 # char, bpe 256, bpe 512
    python benchmarks/tokenizer_choice.py --minutes 5 --variants char bpe:1024

(Not named tokenizers.py: run as a script, that would shadow Hugging Face's `tokenizers`.)

Every variant trains the same network (--units, default 2x256; embed 64; chargen's defaults
otherwise: FastLSTM on a CPU, Adam 2e-3, clip 5, seed 1) on the same text with the same
batches measured in *tokens*: --batch-size streams x --seq-len tokens (32 x 64). So a BPE step
costs about what a char step costs (only the embedding and the softmax grow with the
vocabulary), but covers ~2x the characters, and its backprop window spans ~2x the text.

The clock starts when `chargen.train` is called, so reading the book, learning the BPE merges,
encoding and compiling all count. Validation (the last 10%) runs after each epoch, and a run
stops after the first epoch that ends past the budget. Two figures per variant: the validation
bpc at exactly the budget, interpolated linearly between the epochs that end either side of it
(epochs are long on 2 cores, and one variant's last epoch may end just before the budget and
another's just after), and the best of the epochs that ended within it (what a run stopped at
the budget has saved). Bits per character are the validation loss per token x tokens /
characters / ln 2, so the variants compare directly.
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


class _BudgetSpent(Exception):
    pass


def run_variant(variant: str, budget_s: float, opts: dict, root: str) -> dict:
    import chargen
    from chargen.tokenizer import load_tokenizer

    kind, _, vocab = variant.partition(":")
    tok_opts = {"tokenizer": kind, **({"bpe_vocab": int(vocab)} if vocab else {})}
    epochs: list[tuple[float, dict]] = []
    t0 = time.perf_counter()

    def on_epoch(info) -> None:
        elapsed = time.perf_counter() - t0
        epochs.append((elapsed, info.record))
        print(f"  {variant} epoch {info.epoch}: val {info.record['val_bpc']:.3f} bpc, "
              f"{info.record['chars_per_sec']:,.0f} chars/s, {elapsed / 60:.1f} min", flush=True)
        if elapsed > budget_s:
            raise _BudgetSpent

    try:
        chargen.train(SHAKESPEARE, root=root, name=variant.replace(":", "-"), epochs=1000, progress=False,
                      callbacks=[on_epoch], **opts, **tok_opts)
    except _BudgetSpent:
        pass
    within = [(t, r) for t, r in epochs if t <= budget_s] or epochs[:1]  # (the first epoch, if even it ran over)
    best_t, best = min(within, key=lambda tr: tr[1]["val_bpc"])
    at_budget = None
    if len(epochs) > len(within) and epochs[0][0] <= budget_s:
        (ta, a), (tb, b) = within[-1], epochs[len(within)]
        at_budget = a["val_bpc"] + (b["val_bpc"] - a["val_bpc"]) * (budget_s - ta) / (tb - ta)
    tok = load_tokenizer(Path(root) / variant.replace(":", "-") / "tokenizer.json")
    text = SHAKESPEARE.read_text(encoding="utf-8")
    return {"variant": variant, "vocab": tok.vocab_size, "chars_per_token": len(text) / len(tok.encode(text)),
            "epochs": len(within), "steps": sum(r["steps"] for _, r in within),
            "chars_per_sec": sum(r["chars_per_sec"] * r["seconds"] for _, r in within) / sum(r["seconds"] for _, r in within),
            "best_val_bpc": best["val_bpc"], "best_at_min": best_t / 60, "val_bpc_at_budget": at_budget}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget per variant (default: 5)")
    ap.add_argument("--variants", nargs="+", default=["char", "bpe:256", "bpe:512"], help="char or bpe:VOCAB")
    ap.add_argument("--units", default="256,256")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=64, help="tokens per stream per step, for every variant")
    args = ap.parse_args()
    from chargen._quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    opts = dict(units=tuple(int(u) for u in args.units.split(",")), embed=64, batch_size=args.batch_size,
                seq_len=args.seq_len, seed=1, lr=2e-3, lr_decay="none")  # README's figures: constant 2e-3 (runs are cut by time)
    print(f"tinyshakespeare, {args.minutes:g} min per variant, units {args.units}, batches of {args.batch_size} x "
          f"{args.seq_len} tokens; {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for variant in args.variants:
            rows.append(run_variant(variant, args.minutes * 60, opts, root))
    print(f"load average at the end {os.getloadavg()[0]:.1f} (other processes share the CPU: the times are noisy)\n")
    m = f"{args.minutes:g} min"
    print(f"| tokenizer | vocabulary | chars/token | epochs in {m} | steps | chars/s | val bpc at {m} | "
          f"best val bpc within {m} (at min) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        at = "n/a" if r["val_bpc_at_budget"] is None else f"**{r['val_bpc_at_budget']:.3f}**"
        print(f"| {r['variant']} | {r['vocab']} | {r['chars_per_token']:.2f} | {r['epochs']} | {r['steps']:,} | "
              f"{r['chars_per_sec']:,.0f} | {at} | {r['best_val_bpc']:.3f} ({r['best_at_min']:.1f}) |")
    win = min(rows, key=lambda r: r["best_val_bpc"])
    print(f"\nlowest validation bits per character within {m}: {win['variant']} ({win['best_val_bpc']:.3f})")
    timed = [r for r in rows if r["val_bpc_at_budget"] is not None]
    if timed:
        win = min(timed, key=lambda r: r["val_bpc_at_budget"])
        print(f"lowest at {m} (interpolated): {win['variant']} ({win['val_bpc_at_budget']:.3f})")


if __name__ == "__main__":
    main()
