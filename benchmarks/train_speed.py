"""Training speed on a CPU: the stock Keras layer vs chargen's fast kernel vs PyTorch, and a windowed baseline.

    python benchmarks/train_speed.py                      # LSTM, 512,512 (the issue's reference model)
    python benchmarks/train_speed.py --units 256,256 --jit
    python benchmarks/train_speed.py --variants fast --precision bf16,fp32    # bf16 against fp32, with the ratio
    python benchmarks/train_speed.py --cell gru --variants keras,fast,torch   # GRU: Keras vs chargen vs nn.GRU

`--cell lstm|gru` picks the recurrent cell (chargen/net/). The stateful models come from
chargen.net.model.build_model with the same initial weights and run the same train step as
chargen's trainer (GradientTape, mean sparse softmax CE, Adam with global_clipnorm) on
contiguous-stream batches of tinyshakespeare. chars/s counts every (input, target) pair
trained on, input pipeline included; "pipeline" is the share of the step time spent getting the
numpy batch and converting it to int32.

`torch` (and `torch-1t`, on one thread) runs the same work in PyTorch when it is importable (it
is no dependency of chargen): nn.LSTM or nn.GRU per layer (nn.GRU computes Keras's
reset_after form), the state carried from batch to batch without gradient, Adam, gradient
clipping at norm 5; its own initial weights. Its OpenMP threads wait passively
(OMP_WAIT_POLICY=PASSIVE unless set): spinning, two threads took 10-25 s a step at 2x512 on the
shared 2-core machine against 1.6 s passive (docs/cells.md).

The baseline is the textgenrnn / Keras-example way: shuffled sliding windows of 40 characters,
step 3, one target (the next character) per window, a non-stateful model with the same
recurrent sizes. Each window moves 3 characters through the corpus, so it is scored as corpus
characters per second = 3 x windows per second.

--precision bf16,fp32 times every fast variant in both precisions (bf16: the recurrent layers'
products in bfloat16, chargen/net/recurrence.py) and prints bf16's speed as a ratio to fp32's. The
timed steps of all variants take turns (step k of each, then step k+1 of each), so the host's
drift falls on all of them alike. A roofline line per variant gives the achieved GFLOP/s
(matrix FLOPs per character x chars/s) against a large matmul's in the same precision
(benchmarks/roofline.py), measured in the same run.

Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "corpora" / "tinyshakespeare.txt"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cell", default="lstm", choices=("lstm", "gru"), help="the recurrent cell (default lstm)")
    p.add_argument("--units", default="512,512", help="units per recurrent layer (default 512,512)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant, after --warmup steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--jit", action="store_true", help="also time both models with jit_compile=True on the train step")
    p.add_argument("--variants", default="keras,fast,fast-plain",
                   help="comma list of: keras (the stock Keras layer), fast (chargen's kernel, XLA-compiled time "
                        "loops; in bf16 plain TF loops), fast-plain (chargen's kernel with jit=False: plain TF loops; "
                        "fp32 only), torch (PyTorch's nn.LSTM/nn.GRU on all cores, skipped without torch), torch-1t "
                        "(the same on one thread)")
    p.add_argument("--precision", default="fp32",
                   help="comma list of fp32, bf16: fast variants run in each (keras and torch run in fp32 only)")
    p.add_argument("--baseline-batch", type=int, default=128, help="batch size of the windowed baseline (0 = skip it)")
    p.add_argument("--baseline-window", type=int, default=40)
    p.add_argument("--baseline-stride", type=int, default=3)
    p.add_argument("--no-roofline", action="store_true", help="skip measuring the machine's peaks (seconds)")
    p.add_argument("--corpus", default=str(CORPUS))
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


def make_step(tf, keras, model, spec_x, spec_y, jit: bool):
    """chargen's train step: GradientTape, mean sparse softmax CE, Adam with global_clipnorm 5."""
    opt = keras.optimizers.Adam(learning_rate=2e-3, global_clipnorm=5.0)
    opt.build(model.trainable_variables)

    @tf.function(input_signature=[spec_x, spec_y], jit_compile=jit)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply(grads, model.trainable_variables)
        return loss

    return train_step


def time_steps(step, get_batch, n_warm: int, n_steps: int):
    """Run warm-up then timed steps.

    Returns (every step's loss, pipeline share of the time, median seconds per whole step, warm-up s).
    The median, not the mean: this machine is shared, and a step that waited for the CPU
    says nothing about the code.
    """
    losses, warm_s = warm_up(step, get_batch, n_warm)
    pipe, total = [], []
    for k in range(n_warm, n_warm + n_steps):
        loss, p, t = timed_step(step, get_batch, k)
        losses.append(loss), pipe.append(p), total.append(t)
    return losses, sum(pipe) / sum(total), float(np.median(total)), warm_s


def warm_up(step, get_batch, n_warm: int) -> tuple[list[float], float]:
    t0 = time.perf_counter()
    losses = [float(step(*get_batch(k))) for k in range(n_warm)]
    return losses, time.perf_counter() - t0


def timed_step(step, get_batch, k: int) -> tuple[float, float, float]:
    """(loss, seconds getting the batch, seconds for the whole step) of step k."""
    t0 = time.perf_counter()
    x, y = get_batch(k)
    t1 = time.perf_counter()
    loss = float(step(x, y))  # float() waits for the result
    return loss, t1 - t0, time.perf_counter() - t0


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from chargen._quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras
    import tensorflow as tf

    from chargen.config import ModelConfig
    from chargen.net import get_cell
    from chargen.net.model import build_model, reset_state
    from chargen.net.fast_layer import FastRecurrent
    from chargen.streams import Streams
    from chargen.tokenizer import CharTokenizer

    import roofline
    from torch_rnn import torch_step

    units = tuple(int(u) for u in args.units.split(","))
    B, T = args.batch_size, args.seq_len
    text = Path(args.corpus).read_text(encoding="utf-8")
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    streams = Streams.from_ids(ids, B, T)
    cfg = ModelConfig(vocab_size=tok.vocab_size, embed=args.embed, units=units, cell=args.cell)
    n_total = args.warmup + args.steps
    if n_total > streams.num_batches:
        sys.exit(f"--warmup + --steps = {n_total} exceeds the {streams.num_batches} batches of one epoch")
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if not precisions or set(precisions) - {"fp32", "bf16"}:
        sys.exit(f"--precision: a comma list of fp32, bf16; got {args.precision!r}")

    def stream_batch(k):
        x, y = streams.batch(k)
        return np.asarray(x, np.int32), np.asarray(y, np.int32)

    print(f"corpus {Path(args.corpus).name}: {len(ids):,} chars, vocab {tok.vocab_size}; {args.cell} units {units}, "
          f"embed {args.embed}, batch {B}, seq {T}; {args.warmup} warm-up + {args.steps} timed steps; "
          f"TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs", flush=True)

    keras.utils.set_random_seed(args.seed)
    init = build_model(cfg, B, T).get_weights()  # one set of initial weights for every variant
    spec = tf.TensorSpec((B, T), tf.int32)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - {"keras", "fast", "fast-plain", "torch", "torch-1t"})
    if unknown:
        sys.exit(f"--variants: unknown {', '.join(unknown)}")
    torch_variants = [v for v in variants if v.startswith("torch")]
    variants = [v for v in variants if not v.startswith("torch")]
    # keras runs in fp32 only (bf16 is refused there); in bf16 the fast kernel's loops are plain TF either way,
    # so fast-plain would repeat fast
    runs = [(v, False, p) for v in variants for p in (precisions if v == "fast" else ["fp32"])
            if p in precisions or v == "keras"]
    runs += [(v, True, p) for v, _, p in runs] if args.jit else []
    built = []
    for kind in torch_variants:  # built first: their first step starts torch's threads
        try:
            step, note = torch_step(args.cell, cfg, B, args.seed, 1 if kind == "torch-1t" else None)
        except ImportError:
            print(f"  {kind}: torch is not importable, skipped (pip install torch, in a benchmark venv only)")
            continue
        losses, warm_s = warm_up(step, stream_batch, args.warmup)
        print(f"  {kind:<16} warmed up in {warm_s:.1f}s; {note}", flush=True)
        built.append((kind, step, losses, [], [], warm_s, "fp32"))
    for kind, jit, precision in runs:
        model = build_model(cfg, B, T, kernel="keras" if kind == "keras" else "fast", precision=precision)
        model.set_weights(init)
        for layer in model.layers:
            if isinstance(layer, FastRecurrent):
                layer.jit = kind == "fast"  # before the first call traces it
        reset_state(model)
        step = make_step(tf, keras, model, spec, spec, jit)
        # +jit: jit_compile=True on the whole train step
        name = kind + (" +jit" if jit else "") + (f" {precision}" if len(precisions) > 1 and kind != "keras" else "")
        losses, warm_s = warm_up(step, stream_batch, args.warmup)
        print(f"  {name:<16} compiled and warmed up in {warm_s:.1f}s", flush=True)
        built.append((name, step, losses, [], [], warm_s, precision))
    for k in range(args.warmup, n_total):  # the variants take turns, step by step
        for _name, step, losses, pipe, total, _, _ in built:
            loss, p, t = timed_step(step, stream_batch, k)
            losses.append(loss), pipe.append(p), total.append(t)
    rows = [(name, np.array(losses), B * T / float(np.median(total)), sum(pipe) / sum(total), warm_s, precision)
            for name, _, losses, pipe, total, warm_s, precision in built]
    for name, losses, cps, _, _, _ in rows:
        print(f"  {name:<16} done: {cps:,.0f} chars/s, first loss {losses[0]:.7f}", flush=True)
    del built

    base = None
    if args.baseline_batch > 0:
        base = run_baseline(tf, keras, args, ids, cfg)

    ref = {r[0]: r for r in rows}
    keras_cps = ref.get("keras", rows[0])[2] if rows else None
    keras_loss = ref["keras"][1] if "keras" in ref else None
    torch_cps = max((r[2] for r in rows if r[0].startswith("torch")), default=None)
    print()
    print(f"{'model':<17}{'chars/s':>10}{'vs keras':>10}{'vs torch':>10}{'vs windows':>12}{'|dloss0|':>10}"
          f"{'max|dloss|':>12}{'pipeline':>10}{'warm-up s':>11}")
    for name, losses, cps, frac, warm_s, _ in rows:
        same_init = keras_loss is not None and not name.startswith("torch")  # torch starts from its own weights
        d = f"{abs(losses[0] - keras_loss[0]):>10.1e}{np.abs(losses - keras_loss).max():>12.1e}" if same_init else ""
        vs_base = "" if base is None else f"{cps / base[0]:.1f}x"
        vs_torch = "-" if torch_cps is None else f"{cps / torch_cps:.2f}x"
        print(f"{name:<17}{cps:>10,.0f}{cps / keras_cps:>9.2f}x{vs_torch:>10}{vs_base:>12}{d:>22}{frac:>9.2%}"
              f"{warm_s:>11.1f}")
    if base is not None:
        cps, frac, warm_s = base
        print(f"{'windows':<17}{cps:>10,.0f}{cps / keras_cps if keras_cps else float('nan'):>9.2f}x{'':>10}{'1.0x':>12}"
              f"{'':>22}{frac:>9.2%}{warm_s:>11.1f}")
        print(f"  windows = stock keras {args.cell.upper()}, non-stateful, {args.baseline_window}-char windows, stride "
              f"{args.baseline_stride}, batch {args.baseline_batch}, one target each; chars/s = corpus chars "
              f"advanced = {args.baseline_stride} x windows/s")
    print("  chars/s = batch x seq / median step time (batch fetch included); +jit = jit_compile=True on the")
    print("  whole train step; |dloss0| = |first-step loss - keras first-step loss| (same weights, same batch);")
    print(f"  max|dloss| = the largest such difference over all {n_total} steps (same batches, weights drift apart)")
    print("  vs torch = against the faster torch variant (its own initial weights, so no loss comparison)")
    if "keras" in ref and torch_cps:
        verdict = "slower" if keras_cps < torch_cps else "not slower"
        print(f"the stock Keras {args.cell.upper()} is {verdict} than PyTorch's here ({keras_cps / torch_cps:.2f}x)")
    for name, losses, cps, _, _, precision in rows:
        if precision == "bf16" and name.replace("bf16", "fp32") in ref:
            fp32 = ref[name.replace("bf16", "fp32")]
            ratio = cps / fp32[2]
            print(f"bf16 / fp32, {name.replace(' bf16', '')}: {cps:,.0f} / {fp32[2]:,.0f} chars/s = {ratio:.2f}x   "
                  f"target 1.5x: {'met' if ratio >= 1.5 else 'missed'}; loss over the {n_total} steps: "
                  f"max |bf16 - fp32| {np.abs(losses - fp32[1]).max():.1e}")
    if args.no_roofline:
        return 0
    peaks = roofline.measure()
    print(peaks.describe())
    flops = roofline.matmul_flops_per_char(cfg.embed, units, cfg.vocab_size, training=True,
                                           gates=get_cell(args.cell).gates)
    print(f"  matrix FLOPs per character trained: {flops / 1e6:.2f} M (forward + backward)")
    for name, _, cps, _, _, precision in rows:
        peak = peaks.gflops_bf16 if precision == "bf16" else peaks.gflops_fp32
        print(roofline.line(f"{name}: achieved", flops * cps / 1e9, peak, "GFLOP/s", f"the {precision} matmul peak"))
    return 0


def run_baseline(tf, keras, args, ids, cfg):
    """textgenrnn / Keras example: shuffled 40-char windows, stride 3, predict the next char only."""
    W, S, Bb = args.baseline_window, args.baseline_stride, args.baseline_batch
    windows = np.lib.stride_tricks.sliding_window_view(ids, W + 1)[::S]  # a view: (n, W + 1)
    order = np.random.default_rng(args.seed).permutation(len(windows))

    def window_batch(k):
        w = windows[order[k * Bb:(k + 1) * Bb]]  # gather: a copy
        return np.asarray(w[:, :W], np.int32), np.asarray(w[:, W], np.int32)

    keras.utils.set_random_seed(args.seed)
    inputs = keras.Input(batch_shape=(Bb, W), dtype="int32")
    x = keras.layers.Embedding(cfg.vocab_size, cfg.embed)(inputs)
    layer = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[cfg.cell]
    for i, u in enumerate(cfg.units):
        x = layer(u, return_sequences=i < len(cfg.units) - 1)(x)
    model = keras.Model(inputs, keras.layers.Dense(cfg.vocab_size)(x))
    step = make_step(tf, keras, model, tf.TensorSpec((Bb, W), tf.int32), tf.TensorSpec((Bb,), tf.int32), False)
    _, frac, step_s, warm_s = time_steps(step, window_batch, args.warmup, args.steps)
    cps = S * Bb / step_s
    print(f"  {'windows':<16} done: {cps:,.0f} corpus chars/s (warm-up {warm_s:.1f}s)", flush=True)
    return cps, frac, warm_s


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
