"""Does carrying LSTM state pay? The same model, the same characters, three ways of batching.

    python benchmarks/state_ablation.py                       # seq_len 16, 32, 128 on tinyshakespeare
    python benchmarks/state_ablation.py --seq-lens 32 --modes carried,never --budget-chars 3000000

For every seq_len T and every mode it trains a fresh model from the same initial weights with
the same optimizer (Adam, global clip like chargen's trainer), the same batch size B and the
same number of characters (steps = budget // (B * T), so every seq_len sees the same text):
  carried   B contiguous streams in order, state carried, reset only at each epoch start (chargen)
  reset     the very same batches in the same order, state zeroed before every batch
            (what Keras's `stateful=False` does)
  shuffled  windows of T + 1 characters at a random offset, in a shuffled order, zero state
            (the textgenrnn / Keras-example way, but with a target at every position)
  never     (optional) as carried, but the state is not even reset at an epoch start
All of them are scored the same way, the way a user generates: on the held-out last 10% as
--val-rows contiguous streams with state carried through the whole tail (a separate eval
model with copied weights, reset once), in bits per character. The second table scores the
same characters with the state zeroed every T characters: the context a window model gets.
Deterministic given --seed; only the seconds depend on the machine. The defaults (1x256 LSTM,
embed 64, batch 32, 2,000,000 characters = 2 epochs per run, 9 runs) took 27 min on the shared
2-core machine (100-200 s a run); --budget-chars and --units trade figures for time.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "corpora" / "tinyshakespeare.txt"
LN2 = math.log(2.0)
MODES = ("carried", "reset", "shuffled", "never")
Batch = tuple[np.ndarray, np.ndarray, bool]  # x (B, T), y (B, T), zero the state before this batch?


# ------------------------------------------------------------ the three batch orders

def stream_batches(streams, steps: int, reset_every_batch: bool = False,
                   reset_at_epoch: bool = True) -> Iterator[Batch]:
    """`steps` batches of `streams` in stream order, starting a new epoch (batch 0) when one ends.

    carried: reset only at an epoch start; reset: before every batch; never: not at all.
    """
    for step in range(steps):
        k = step % streams.num_batches
        x, y = streams.batch(k)
        yield x, y, reset_every_batch or (reset_at_epoch and k == 0)


def window_batches(ids: np.ndarray, batch_size: int, seq_len: int, steps: int, seed: int) -> Iterator[Batch]:
    """`steps` batches of shuffled windows of seq_len + 1 characters, zero state for each.

    Each epoch cuts the text into back-to-back windows from a random offset in [0, T) (so every
    character is a target about once per epoch, as with the streams) and serves them in a fresh
    random order, B at a time; the last incomplete batch of an epoch is dropped.
    """
    rng = np.random.default_rng(seed)
    cols = np.arange(seq_len + 1)
    step = 0
    while step < steps:
        offset = int(rng.integers(0, max(1, min(seq_len, len(ids) - batch_size * seq_len))))
        starts = offset + seq_len * np.arange((len(ids) - offset - 1) // seq_len)
        starts = starts[rng.permutation(len(starts))]
        for k in range(len(starts) // batch_size):
            if step == steps:
                return
            w = ids[starts[k * batch_size:(k + 1) * batch_size, None] + cols]  # a gather: a copy
            yield w[:, :-1], w[:, 1:], True
            step += 1


def make_batches(mode: str, train_ids: np.ndarray, batch_size: int, seq_len: int, steps: int,
                 seed: int) -> Iterator[Batch]:
    from chargen.streams import Streams

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    streams = Streams.from_ids(train_ids, batch_size, seq_len, "training text")  # also the length check
    if mode == "shuffled":
        return window_batches(train_ids, batch_size, seq_len, steps, seed)
    return stream_batches(streams, steps, reset_every_batch=mode == "reset", reset_at_epoch=mode != "never")


# ------------------------------------------------------------ validation

def val_layout(val_ids: np.ndarray, rows: int) -> np.ndarray:
    """The held-out tail as `rows` contiguous streams, (rows, n): the same for every run."""
    per = len(val_ids) // rows
    if per < 2:
        raise SystemExit(f"the validation tail has {len(val_ids):,} characters, too few for --val-rows {rows}")
    return val_ids[: rows * per].reshape(rows, per)


def val_windows(data: np.ndarray, window: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Consecutive (x, y) chunks of at most `window` columns covering every target of `data` once."""
    n = data.shape[1] - 1
    for start in range(0, n, window):
        end = min(start + window, n)
        yield data[:, start:end], data[:, start + 1:end + 1]


class Evaluator:
    """One eval model (val rows x any length) and its loss function, shared by all runs."""

    def __init__(self, cfg, data: np.ndarray, carried_window: int):
        import tensorflow as tf

        from chargen.net.model import build_model

        self.data, self.carried_window = data, carried_window
        self.model = model = build_model(cfg, data.shape[0], None, kernel="fast")
        for layer in model.layers:
            # Plain TF time loops: forward-only calls of several lengths, each of which would
            # otherwise be XLA-compiled on its own (seconds each) to save milliseconds.
            if hasattr(layer, "jit"):
                layer.jit = False

        @tf.function  # one trace per window length (at most two per length: full and last)
        def loss_sum(x, y):
            logits = model(x, training=False)
            return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))

        self._loss_sum = loss_sum

    def bpc(self, weights: list[np.ndarray], reset_every: int | None = None) -> float:
        """Bits per character over the whole tail: state carried (None) or zeroed every `reset_every` chars."""
        from chargen.net.model import reset_state

        self.model.set_weights(weights)
        reset_state(self.model)
        total = 0.0
        for x, y in val_windows(self.data, reset_every or self.carried_window):
            if reset_every:
                reset_state(self.model)
            total += float(self._loss_sum(np.asarray(x, np.int32), np.asarray(y, np.int32)))
        return total / (self.data.shape[0] * (self.data.shape[1] - 1)) / LN2


# ------------------------------------------------------------ training

def make_train_step(model, batch_size: int, seq_len: int, lr: float, clip: float) -> Callable:
    """chargen's train step: GradientTape, mean sparse softmax CE, Adam with global_clipnorm."""
    import keras
    import tensorflow as tf

    opt = keras.optimizers.Adam(learning_rate=lr, global_clipnorm=clip or None)
    opt.build(model.trainable_variables)
    spec = tf.TensorSpec((batch_size, seq_len), tf.int32)

    @tf.function(input_signature=[spec, spec])
    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    return train_step


def train_run(cfg, init: list[np.ndarray], batches: Iterator[Batch], batch_size: int, seq_len: int,
              lr: float, clip: float) -> tuple[object, list[float]]:
    """Train a fresh FastLSTM model from `init` on `batches`; returns the model and every step's loss."""
    from chargen.net.model import build_model, reset_state

    model = build_model(cfg, batch_size, seq_len, kernel="fast")
    model.set_weights(init)
    step = make_train_step(model, batch_size, seq_len, lr, clip)
    losses = []
    for x, y, zero_state in batches:
        if zero_state:
            reset_state(model)
        losses.append(float(step(np.asarray(x, np.int32), np.asarray(y, np.int32))))
    return model, losses


# ------------------------------------------------------------ the benchmark

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--book", default=str(SHAKESPEARE), help="UTF-8 text (default: tinyshakespeare)")
    p.add_argument("--seq-lens", default="16,32,128", help="comma list of seq_len values")
    p.add_argument("--modes", default="carried,reset,shuffled", help=f"comma list of: {', '.join(MODES)}")
    p.add_argument("--units", default="256", help="LSTM units per layer, e.g. 256 or 256,256")
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--budget-chars", type=int, default=2_000_000, help="training characters per run")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--val-rows", type=int, default=32, help="contiguous validation streams")
    p.add_argument("--eval-window", type=int, default=128, help="chars per eval call (state carried: no effect)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke run: tiny model, budget and seq_lens")
    if p.parse_known_args(argv)[0].tiny:  # tiny defaults; options given explicitly still win
        p.set_defaults(units="24,16", embed=8, batch_size=4, val_rows=16, budget_chars=2048, seq_lens="8,16",
                       eval_window=32)
    return p.parse_args(argv)


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> list[dict]:
    """Train every (seq_len, mode) pair; returns one result dict per run."""
    import keras
    import tensorflow as tf

    from chargen.config import ModelConfig
    from chargen.corpus import read_text
    from chargen.net.model import build_model
    from chargen.streams import split
    from chargen.tokenizer import CharTokenizer

    seq_lens = [int(t) for t in args.seq_lens.split(",")]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"unknown --modes {bad}; known: {', '.join(MODES)}")
    text = read_text(args.book)
    tok = CharTokenizer.from_text(text)
    train_ids, val_ids = split(tok.encode(text), args.val_fraction)
    cfg = ModelConfig(vocab_size=tok.vocab_size, embed=args.embed,
                      units=tuple(int(u) for u in args.units.split(","))).validate()
    B = args.batch_size
    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    init = build_model(cfg, B, None).get_weights()  # one set of initial weights for every run
    evaluator = Evaluator(cfg, val_layout(val_ids, args.val_rows), args.eval_window)
    log(f"{Path(args.book).name}: {len(train_ids):,} training + {len(val_ids):,} held-out chars, vocab "
        f"{cfg.vocab_size}; model {'x'.join(map(str, cfg.units))} LSTM (FastLSTM), embed {cfg.embed}, batch {B}, "
        f"Adam lr {args.lr:g}, clip {args.clip:g}, seed {args.seed}; every run trains on the same "
        f"{args.budget_chars:,} characters (steps = budget / (batch x seq_len)), about "
        f"{args.budget_chars / len(train_ids):.2f} epochs; val: {evaluator.data.shape[0]} streams x "
        f"{evaluator.data.shape[1] - 1:,} targets, state carried, {os.cpu_count()} CPUs")
    results = []
    for T in seq_lens:
        steps = args.budget_chars // (B * T)
        if steps < 1:
            raise SystemExit(f"--budget-chars {args.budget_chars:,} is less than one batch of {B} x {T}")
        for mode in modes:
            t0 = time.perf_counter()
            batches = make_batches(mode, train_ids, B, T, steps, args.seed)
            model, losses = train_run(cfg, init, batches, B, T, args.lr, args.clip)
            t_train = time.perf_counter() - t0
            weights = model.get_weights()
            r = dict(seq_len=T, mode=mode, steps=steps, chars=steps * B * T, train_s=t_train,
                     train_bpc=float(np.mean(losses[-max(1, steps // 10):])) / LN2,
                     val_bpc=evaluator.bpc(weights), val_bpc_reset=evaluator.bpc(weights, reset_every=T))
            r["seconds"] = time.perf_counter() - t0
            results.append(r)
            log(f"seq_len {T:>4} {mode:<9} {steps:>6,} steps  val {r['val_bpc']:.4f} bpc (state carried), "
                f"{r['val_bpc_reset']:.4f} (reset every {T}); train {r['train_bpc']:.3f} (last 10%), {r['train_s']:.0f} s, "
                f"{r['chars'] / r['train_s']:,.0f} chars/s")
            del model
    return results


def format_table(results: list[dict]) -> str:
    """Rows = seq_len, columns = each mode's val bpc, differences to carried, seconds per run."""
    modes = list(dict.fromkeys(r["mode"] for r in results))
    by = {(r["seq_len"], r["mode"]): r for r in results}
    seq_lens = list(dict.fromkeys(r["seq_len"] for r in results))
    others = [m for m in modes if m != "carried"] if "carried" in modes else []
    lines = []
    for title, key in (("val bpc, state carried through the held-out tail (what generation sees)", "val_bpc"),
                       ("val bpc, state zeroed every seq_len characters (the context a window model gets)",
                        "val_bpc_reset")):
        head = f"{'seq_len':>7} {'steps':>7} {'chars':>10}" + "".join(f"{m:>10}" for m in modes) + "".join(
            f"{m + '-carried':>17}" for m in others)
        lines += [title, head]
        for T in seq_lens:
            first = by[T, modes[0]]
            row = f"{T:>7} {first['steps']:>7,} {first['chars']:>10,}" + "".join(f"{by[T, m][key]:>10.4f}" for m in modes)
            row += "".join(f"{by[T, m][key] - by[T, 'carried'][key]:>+17.4f}" for m in others)
            lines.append(row)
        lines.append("")
    lines.append(f"{'seq_len':>7}" + "".join(f"{m + ' s':>12}" for m in modes) + "   (seconds per run: train + eval)")
    for T in seq_lens:
        lines.append(f"{T:>7}" + "".join(f"{by[T, m]['seconds']:>12.0f}" for m in modes))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from chargen._quiet import import_tensorflow_quietly
    from chargen.errors import ChargenError

    import_tensorflow_quietly()
    try:
        results = run(args, log=lambda s: print(s, flush=True))
    except ChargenError as e:
        raise SystemExit(f"state_ablation: error: {e}") from None
    print()
    print(f"every run: the same {args.budget_chars:,}-character budget (steps = budget // (batch x seq_len), "
          "so every seq_len sees the same text), the same initial weights and optimizer; lower bpc is better")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
