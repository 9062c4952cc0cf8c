"""Streaming generation speed: chargen's Generator vs `model.predict` per character, same weights.

    python benchmarks/sample_speed.py                 # 2x512, the issue's reference model
    python benchmarks/sample_speed.py --units 256,256 --length 3000
    python benchmarks/sample_speed.py --busy          # with another process keeping one core busy

Prints chars/s for one stream and for --num-samples streams at once (total), on one core and on
two (chargen.cores; the Generator picks two where two are ours and they are faster), the ratio to
`predict` per character, the time to the first character after loading, and how far the
numpy step is from Keras (max abs difference of next-character probabilities). With --busy a
`while True: pass` process runs beside the timed streams, and two cores are also timed without
the Stepper's fallback to one ("always two").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the CLI sets them (chargen/cli.py)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chargen._quiet import import_tensorflow_quietly  # noqa: E402

SHAKESPEARE = Path(__file__).resolve().parents[1] / "corpora" / "tinyshakespeare.txt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", default="512,512")
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--length", type=int, default=3000, help="characters per timed stream")
    ap.add_argument("--num-samples", type=int, default=16)
    ap.add_argument("--predict-chars", type=int, default=40, help="characters for the slow predict baseline")
    ap.add_argument("--busy", action="store_true", help="keep one core busy with another process while timing")
    args = ap.parse_args()
    import_tensorflow_quietly()
    import numpy as np

    from chargen.config import ModelConfig
    from chargen.generate import Generator
    from chargen.model import build_model, reset_state
    from chargen.tokenizer import CharTokenizer

    text = SHAKESPEARE.read_text(encoding="utf-8") if SHAKESPEARE.exists() else "".join(map(chr, range(32, 97)))
    tok = CharTokenizer.from_text(text)
    cfg = ModelConfig(vocab_size=tok.vocab_size, embed=args.embed, units=tuple(int(u) for u in args.units.split(",")))
    weights = build_model(cfg, 1).get_weights()  # random weights: speed does not depend on training

    t0 = time.perf_counter()
    gen = Generator(cfg, weights, tok)
    first = next(gen.stream("ROMEO:", 1, rng_seed=0))
    t_first = time.perf_counter() - t0

    from chargen.cores import Stepper
    from chargen.sampling import NumpyLSTM

    base = NumpyLSTM.from_keras(gen.model)
    ways = {"1 core": dict(cores=1), "2 cores": dict(cores=2)}  # the Generator allows 2 where two cores are ours
    if args.busy:
        ways["always 2 cores"] = dict(cores=2, adapt=False)
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    speeds = {}
    try:
        for way, opts in ways.items():
            gen.stepper = Stepper(base, **opts)
            gen.reset()
            t0 = time.perf_counter()
            n = sum(1 for _ in gen.stream("ROMEO:", args.length, temperature=0.8, rng_seed=0))
            one = n / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            steps = sum(1 for _ in gen.stream_many("ROMEO:", args.num_samples, args.length, temperature=0.8,
                                                   rng_seed=0))
            speeds[way] = (one, steps * args.num_samples / (time.perf_counter() - t0))
            if way == "2 cores":
                settled = (gen.stepper.one_row.use_two, gen.stepper.many_rows.use_two)
    finally:
        if args.busy:
            hog.kill()
    gen.stepper = Stepper(base)

    # Baseline: what tutorials do, model.predict on the batch-1 Keras model for every character.
    m = gen.model
    reset_state(m)
    ids = tok.encode("ROMEO:").astype(np.int32)
    m.predict(ids[None, :], verbose=0)
    nxt = np.array([[ids[-1]]], np.int32)
    t0 = time.perf_counter()
    for _ in range(args.predict_chars):
        p = m.predict(nxt, verbose=0)
        nxt = np.array([[int(np.argmax(p[0, -1]))]], np.int32)
    predict = args.predict_chars / (time.perf_counter() - t0)

    # Agreement: numpy steps vs Keras over the same 200 characters.
    probe = text[:200] if len(text) > 200 else text
    gen.reset()
    keras_logits = gen.prime(probe)
    gen.reset()
    gen.prime(probe[:1])
    for ch in probe[1:]:
        logits, gen._state = gen.stepper.step(tok.encode(ch).astype(np.int64), gen._state)
    sm = lambda z: np.exp(z - z.max()) / np.exp(z - z.max()).sum()  # noqa: E731
    diff = float(np.abs(sm(logits[0].astype(np.float64)) - sm(keras_logits.astype(np.float64))).max())

    print(f"model: {cfg.layers}x{cfg.units[0]} LSTM, embed {cfg.embed}, vocab {cfg.vocab_size}; "
          f"{os.cpu_count()} CPUs; first char {first!r}")
    print(f"{'path':38s} {'chars/s':>10s} {'vs predict':>11s}")
    print(f"{'model.predict per character':38s} {predict:10,.0f} {1:10.1f}x")
    for way, (one, many) in speeds.items():
        print(f"{'Generator.stream, ' + way:38s} {one:10,.0f} {one / predict:10.1f}x"
              f"   target 3,000: {one / 3000:.0%}")
        print(f"{'Generator.stream_many %d, %s' % (args.num_samples, way):38s} {many:10,.0f} "
              f"{many / predict:10.1f}x   target 20,000: {many / 20000:.0%}")
    print(f"{'another process kept one core busy; ' if args.busy else ''}allowed two cores, the steppers "
          f"ended on two: one stream {settled[0]}, many {settled[1]}")
    print(f"time to first character (build + load + prime): {t_first:.2f} s")
    print(f"max |p_numpy - p_keras| over 200 chars: {diff:.1e}")


if __name__ == "__main__":
    main()
