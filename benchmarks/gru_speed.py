"""Training speed of a GRU on a CPU: stock keras.layers.GRU vs chargen's FastGRU vs PyTorch's nn.GRU.

    python benchmarks/gru_speed.py                          # 2x512, batch 32 x seq 64, embed 64
    python benchmarks/gru_speed.py --variants keras,fast,fast-plain,torch,lstm-fast

The same work for every variant: Embedding(V, 64) -> stateful GRU layers (reset_after, the
cuDNN form; nn.GRU computes the same form) -> Dense(V) logits, mean softmax cross-entropy over
every position, Adam with global gradient-norm clipping at 5, the state carried from batch to
batch without gradient (truncated BPTT), on contiguous-stream batches of tinyshakespeare (or of
random ids over 65 symbols when the corpus is absent: the speed does not depend on the text).
The Keras variants run chargen's train step (benchmarks/train_speed.make_step). PyTorch runs
only if `torch` is importable; it is no dependency of chargen. Its OpenMP threads wait passively
here (OMP_WAIT_POLICY=PASSIVE unless set): with the default spinning, two threads took 10-25 s
a step at 2x512 on this shared 2-core machine (load ~14) against 1.6 s passive and 2.2 s on one
thread, and TensorFlow's own idle threads would spin against it the same way. "torch-1t" runs
the same model on one thread, for the case where that is faster.

The variants take turns: every round runs each for --steps-per-round steps, and a variant's
first step in a round is not timed (the other framework's threads may still be spinning down).
Figures are medians over all rounds; ratios are against the stock Keras GRU measured in the
same run, because this machine's speed moves 2x with its neighbours. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
VARIANTS = ("keras", "fast", "fast-plain", "torch", "torch-1t", "lstm-fast")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--units", default="512,512", help="GRU units per layer (default 512,512)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--rounds", type=int, default=4, help="rounds in which every variant takes its turn")
    p.add_argument("--steps-per-round", type=int, default=3, help="steps per variant per round (the first not timed)")
    p.add_argument("--variants", default="keras,fast,torch",
                   help="comma list of: keras (stock GRU), fast (FastGRU, XLA-compiled loops), fast-plain "
                        "(FastGRU, plain TF loops), torch (nn.GRU on all cores, skipped without torch), torch-1t "
                        "(nn.GRU on one thread), lstm-fast (FastLSTM, same units, for scale)")
    p.add_argument("--corpus", default=str(CORPUS))
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    args.units = tuple(int(u) for u in args.units.split(","))
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown --variants {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    return args


def load_ids(path: str, vocab: int = 65) -> tuple[np.ndarray, int, str]:
    """The corpus as character ids, or 1M random ids over `vocab` symbols when it is absent."""
    from chargen.tokenizer import CharTokenizer

    if Path(path).is_file():
        text = Path(path).read_text(encoding="utf-8")
        tok = CharTokenizer.from_text(text)
        return np.asarray(tok.encode(text)), tok.vocab_size, Path(path).name
    return np.random.default_rng(0).integers(0, vocab, 1_000_000), vocab, f"random ids ({path} not found)"


def keras_variant(kind: str, args, vocab: int, init: list):
    """A step function (x, y) -> loss for a Keras model of the given kind, state carried in its layers.

    GRU models take the weights in `init` (the first GRU model built fills it), so they all start alike.
    """
    import keras
    import tensorflow as tf

    from chargen.fastlstm import FastLSTM
    from chargen.gru import FastGRU, keras_gru
    from train_speed import make_step

    B, T = args.batch_size, args.seq_len
    keras.utils.set_random_seed(args.seed)
    inputs = keras.Input(batch_shape=(B, T), dtype="int32")
    x = keras.layers.Embedding(vocab, args.embed, name="embedding")(inputs)
    for i, u in enumerate(args.units):
        if kind == "keras":
            x = keras_gru(u, f"gru_{i}")(x)
        elif kind == "lstm-fast":
            x = FastLSTM(u, name=f"lstm_{i}")(x)
        else:
            x = FastGRU(u, jit=kind == "fast", name=f"gru_{i}")(x)
    model = keras.Model(inputs, keras.layers.Dense(vocab, name="logits")(x))
    if kind != "lstm-fast":
        if init:
            model.set_weights(init)
        else:
            init.extend(model.get_weights())
    spec = tf.TensorSpec((B, T), tf.int32)
    step = make_step(tf, keras, model, spec, spec, jit=False)
    return lambda x, y: float(step(x, y))


def torch_variant(args, vocab: int, threads: int | None):
    """The same model and train step in PyTorch: nn.GRU per layer, Adam, clip_grad_norm_(5).

    threads: torch's intra-op threads for this variant's steps (None: torch's default, one per core).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch's OpenMP starts
    import torch
    from torch import nn

    default_threads = torch.get_num_threads()
    threads = threads or default_threads

    torch.manual_seed(args.seed)
    dims = (args.embed, *args.units)
    emb = nn.Embedding(vocab, args.embed)
    grus = nn.ModuleList(nn.GRU(d, u, batch_first=True) for d, u in zip(dims, dims[1:]))
    out = nn.Linear(args.units[-1], vocab)
    params = [*emb.parameters(), *grus.parameters(), *out.parameters()]
    opt = torch.optim.Adam(params, lr=2e-3)
    state = [torch.zeros(1, args.batch_size, u) for u in args.units]

    def step(x, y):
        torch.set_num_threads(threads)
        x, y = torch.from_numpy(x).long(), torch.from_numpy(y).long()
        opt.zero_grad(set_to_none=True)
        h = emb(x)
        for i, gru in enumerate(grus):
            h, last = gru(h, state[i])
            state[i] = last.detach()  # carried to the next batch, no gradient across batches
        loss = nn.functional.cross_entropy(out(h).reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        torch.set_num_threads(default_threads)
        return float(loss.detach())

    return step, f"torch {torch.__version__} (threads={threads}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']})"


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from chargen._quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras
    import tensorflow as tf

    from chargen.streams import Streams

    B, T = args.batch_size, args.seq_len
    ids, vocab, source = load_ids(args.corpus)
    streams = Streams.from_ids(ids, B, T)
    per_variant = args.rounds * args.steps_per_round + 1  # + the warm-up (trace, XLA compile) step
    if per_variant > streams.num_batches:
        sys.exit(f"{per_variant} steps per variant exceed the {streams.num_batches} batches of one epoch; "
                 "use fewer --rounds or --steps-per-round")
    steps, notes, init = {}, [], []
    for kind in args.variants:
        if kind.startswith("torch"):
            try:
                steps[kind], note = torch_variant(args, vocab, 1 if kind == "torch-1t" else None)
                notes.append(note)
            except ImportError:
                print("  torch: not importable, skipped (pip install torch, in a benchmark venv only)")
            continue
        steps[kind] = keras_variant(kind, args, vocab, init)
    print(f"{source}: {len(ids):,} ids, vocab {vocab}; units {args.units}, embed {args.embed}, batch {B}, seq {T}; "
          f"{args.rounds} rounds x {args.steps_per_round} steps; TF {tf.__version__}, Keras {keras.__version__}, "
          f"{os.cpu_count()} CPUs" + "".join(f"; {n}" for n in notes), flush=True)

    def batch(k):
        x, y = streams.batch(k)
        return np.asarray(x, np.int32), np.asarray(y, np.int32)

    times = {kind: [] for kind in steps}
    losses = {kind: [] for kind in steps}
    warm = {}
    for kind, step in steps.items():  # warm-up: tracing and XLA compilation, batch 0 for everyone
        t0 = time.perf_counter()
        losses[kind].append(step(*batch(0)))
        warm[kind] = time.perf_counter() - t0
    for r in range(args.rounds):
        for kind, step in steps.items():
            for s in range(args.steps_per_round):
                k = 1 + r * args.steps_per_round + s  # every variant trains on the same batches in order
                x, y = batch(k)
                t0 = time.perf_counter()
                losses[kind].append(step(x, y))
                if s > 0:
                    times[kind].append(time.perf_counter() - t0)
        print(f"  round {r + 1}: " + ", ".join(f"{kind} {B * T / np.median(ts):,.0f}" for kind, ts in times.items())
              + " chars/s so far", flush=True)

    cps = {kind: B * T / float(np.median(ts)) for kind, ts in times.items()}
    base = cps.get("keras")
    torch_cps = max((c for kind, c in cps.items() if kind.startswith("torch")), default=None)
    print()
    print(f"{'variant':<12}{'chars/s':>10}{'vs keras':>10}{'vs torch':>10}{'spread':>9}{'warm-up s':>11}"
          f"{'loss 1st':>10}{'loss last':>11}")
    for kind, c in cps.items():
        ts = np.array(times[kind])
        spread = (np.percentile(ts, 90) - np.percentile(ts, 10)) / np.median(ts)
        vs_keras = f"{c / base:.2f}x" if base else "-"
        vs_torch = f"{c / torch_cps:.2f}x" if torch_cps else "-"
        print(f"{kind:<12}{c:>10,.0f}{vs_keras:>10}{vs_torch:>10}{spread:>9.0%}{warm[kind]:>11.1f}"
              f"{losses[kind][0]:>10.4f}{losses[kind][-1]:>11.4f}")
    print("  chars/s = batch x seq / median step time; spread = (p90 - p10) / median of the timed steps;")
    print("  vs torch = against the faster torch variant")
    print("  the Keras GRU variants start from the same weights, so their first losses match; torch has its own init")
    if base and torch_cps:
        verdict = "slower" if base < torch_cps else "not slower"
        print(f"  the stock Keras GRU is {verdict} than nn.GRU here ({base / torch_cps:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
