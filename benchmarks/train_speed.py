"""Training speed on a CPU: stock keras.layers.LSTM vs chargen's FastLSTM, and a windowed baseline.

    python benchmarks/train_speed.py                      # 512,512 (the issue's reference model)
    python benchmarks/train_speed.py --units 256,256 --jit
    python benchmarks/train_speed.py --variants fast --precision bf16,fp32    # bf16 against fp32, with the ratio

Both stateful models come from chargen.model.build_model with the same initial weights and
run the same train step as chargen's trainer (GradientTape, mean sparse softmax CE, Adam with
global_clipnorm) on contiguous-stream batches of tinyshakespeare. chars/s counts every
(input, target) pair trained on, input pipeline included; "pipeline" is the share of the step
time spent getting the numpy batch and converting it to int32.

The baseline is the textgenrnn / Keras-example way: shuffled sliding windows of 40 characters,
step 3, one target (the next character) per window, a non-stateful model with the same LSTM
sizes. Each window moves 3 characters through the corpus, so it is scored as corpus
characters per second = 3 x windows per second.

--precision bf16,fp32 times every FastLSTM variant in both precisions (bf16: the LSTM layers'
products in bfloat16, chargen/fastlstm.py) and prints bf16's speed as a ratio to fp32's. The
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
    p.add_argument("--units", default="512,512", help="LSTM units per layer (default 512,512)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant, after --warmup steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--jit", action="store_true", help="also time both models with jit_compile=True on the train step")
    p.add_argument("--variants", default="keras,fast,fast-plain",
                   help="comma list of: keras (stock LSTM), fast (FastLSTM, XLA-compiled time loops; in bf16 "
                        "plain TF loops), fast-plain (FastLSTM with jit=False: plain TF loops; fp32 only)")
    p.add_argument("--precision", default="fp32",
                   help="comma list of fp32, bf16: FastLSTM variants run in each (keras runs in fp32 only)")
    p.add_argument("--baseline-batch", type=int, default=128, help="batch size of the windowed baseline (0 = skip it)")
    p.add_argument("--baseline-window", type=int, default=40)
    p.add_argument("--baseline-stride", type=int, default=3)
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
    from chargen.fastlstm import FastLSTM
    from chargen.model import build_model, reset_state
    from chargen.streams import Streams
    from chargen.tokenizer import CharTokenizer

    import roofline

    units = tuple(int(u) for u in args.units.split(","))
    B, T = args.batch_size, args.seq_len
    text = Path(args.corpus).read_text(encoding="utf-8")
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    streams = Streams.from_ids(ids, B, T)
    cfg = ModelConfig(vocab_size=tok.vocab_size, embed=args.embed, units=units)
    n_total = args.warmup + args.steps
    if n_total > streams.num_batches:
        sys.exit(f"--warmup + --steps = {n_total} exceeds the {streams.num_batches} batches of one epoch")
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if not precisions or set(precisions) - {"fp32", "bf16"}:
        sys.exit(f"--precision: a comma list of fp32, bf16; got {args.precision!r}")

    def stream_batch(k):
        x, y = streams.batch(k)
        return np.asarray(x, np.int32), np.asarray(y, np.int32)

    print(f"corpus {Path(args.corpus).name}: {len(ids):,} chars, vocab {tok.vocab_size}; units {units}, "
          f"embed {args.embed}, batch {B}, seq {T}; {args.warmup} warm-up + {args.steps} timed steps; "
          f"TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs", flush=True)

    keras.utils.set_random_seed(args.seed)
    init = build_model(cfg, B, T).get_weights()  # one set of initial weights for every variant
    spec = tf.TensorSpec((B, T), tf.int32)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    # keras runs in fp32 only (bf16 is refused there); in bf16 FastLSTM's loops are plain TF either way,
    # so fast-plain would repeat fast
    runs = [(v, False, p) for v in variants for p in (precisions if v == "fast" else ["fp32"])
            if p in precisions or v == "keras"]
    runs += [(v, True, p) for v, _, p in runs] if args.jit else []
    built = []
    for kind, jit, precision in runs:
        model = build_model(cfg, B, T, lstm="keras" if kind == "keras" else "fast", precision=precision)
        model.set_weights(init)
        for layer in model.layers:
            if isinstance(layer, FastLSTM):
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
    print()
    print(f"{'model':<17}{'chars/s':>10}{'vs keras':>10}{'vs windows':>12}{'|dloss0|':>10}{'max|dloss|':>12}"
          f"{'pipeline':>10}{'warm-up s':>11}")
    for name, losses, cps, frac, warm_s, _ in rows:
        d = "" if keras_loss is None else f"{abs(losses[0] - keras_loss[0]):>10.1e}{np.abs(losses - keras_loss).max():>12.1e}"
        vs_base = "" if base is None else f"{cps / base[0]:.1f}x"
        print(f"{name:<17}{cps:>10,.0f}{cps / keras_cps:>9.2f}x{vs_base:>12}{d:>22}{frac:>9.2%}{warm_s:>11.1f}")
    if base is not None:
        cps, frac, warm_s = base
        print(f"{'windows':<17}{cps:>10,.0f}{cps / keras_cps if keras_cps else float('nan'):>9.2f}x{'1.0x':>12}"
              f"{'':>22}{frac:>9.2%}{warm_s:>11.1f}")
        print(f"  windows = stock keras LSTM, non-stateful, {args.baseline_window}-char windows, stride "
              f"{args.baseline_stride}, batch {args.baseline_batch}, one target each; chars/s = corpus chars "
              f"advanced = {args.baseline_stride} x windows/s")
    print("  chars/s = batch x seq / median step time (batch fetch included); +jit = jit_compile=True on the")
    print("  whole train step; |dloss0| = |first-step loss - keras first-step loss| (same weights, same batch);")
    print(f"  max|dloss| = the largest such difference over all {n_total} steps (same batches, weights drift apart)")
    for name, losses, cps, _, _, precision in rows:
        if precision == "bf16" and name.replace("bf16", "fp32") in ref:
            fp32 = ref[name.replace("bf16", "fp32")]
            ratio = cps / fp32[2]
            print(f"bf16 / fp32, {name.replace(' bf16', '')}: {cps:,.0f} / {fp32[2]:,.0f} chars/s = {ratio:.2f}x   "
                  f"target 1.5x: {'met' if ratio >= 1.5 else 'missed'}; loss over the {n_total} steps: "
                  f"max |bf16 - fp32| {np.abs(losses - fp32[1]).max():.1e}")
    peaks = roofline.measure()
    print(peaks.describe())
    flops = roofline.matmul_flops_per_char(cfg.embed, units, cfg.vocab_size, training=True)
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
    for i, u in enumerate(cfg.units):
        x = keras.layers.LSTM(u, return_sequences=i < len(cfg.units) - 1)(x)
    model = keras.Model(inputs, keras.layers.Dense(cfg.vocab_size)(x))
    step = make_step(tf, keras, model, tf.TensorSpec((Bb, W), tf.int32), tf.TensorSpec((Bb,), tf.int32), False)
    _, frac, step_s, warm_s = time_steps(step, window_batch, args.warmup, args.steps)
    cps = S * Bb / step_s
    print(f"  {'windows':<16} done: {cps:,.0f} corpus chars/s (warm-up {warm_s:.1f}s)", flush=True)
    return cps, frac, warm_s


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
