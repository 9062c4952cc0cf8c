"""Streaming generation speed: chargen's Generator vs `model.predict` per character, same weights.

    python benchmarks/sample_speed.py                 # 2x512, the issue's reference model
    python benchmarks/sample_speed.py --units 256,256 --length 3000
    python benchmarks/sample_speed.py --busy          # with another process keeping one core busy
    python benchmarks/sample_speed.py --precision int8,fp32   # the int8 engine beside fp32, with ratios

Prints chars/s for one stream and for --num-samples streams at once (total), on one core and on
two (chargen.cores; the Generator picks two where two are ours and they are faster), the ratio to
`predict` per character, the time to the first character after loading, and how far the
numpy step is from Keras (max abs difference of next-character probabilities). With --busy a
`while True: pass` process runs beside the timed streams, and two cores are also timed without
the Stepper's fallback to one ("always two"). With --precision int8,fp32 the int8 engine
(chargen/quantized.py, LiteRT) is timed on one and two threads too, and its speed is printed
as a ratio to the fp32 Generator's (its default: two cores where they pay). The ways take
turns, --rounds times, so the host's drift falls on all of them alike. A roofline line gives
the GB/s of weights one stream reads against the machine's measured read bandwidth
(benchmarks/roofline.py).
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
    ap.add_argument("--precision", default="fp32", help="comma list of fp32, int8 (default: fp32)")
    ap.add_argument("--rounds", type=int, default=3, help="turns each way takes; each streams --length / rounds")
    args = ap.parse_args()
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if not precisions or set(precisions) - {"fp32", "int8"}:
        ap.error(f"--precision: a comma list of fp32, int8; got {args.precision!r}")
    import_tensorflow_quietly()
    import numpy as np

    from chargen.config import ModelConfig
    from chargen.generate import Generator
    from chargen.net.model import build_model, reset_state
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
    from chargen.net.numpy_engine import NumpyEngine
    from chargen.quantized import Int8Engine

    base = NumpyEngine.from_weights(cfg, weights)
    ways = {}  # name -> a fresh engine (a Stepper keeps its own timing, so each way gets its own)
    if "fp32" in precisions:
        ways["1 core"] = lambda: Stepper(base, cores=1)
        ways["2 cores"] = lambda: Stepper(base, cores=2)  # the Generator allows 2 where two cores are ours
        if args.busy:
            ways["always 2 cores"] = lambda: Stepper(base, cores=2, adapt=False)
    if "int8" in precisions:
        t0 = time.perf_counter()
        int8 = Int8Engine.from_weights(cfg, weights, cache=False)
        convert_s = time.perf_counter() - t0
        dense = (int8.dense_kernel, int8.dense_bias)
        ways["int8, 1 thread"] = lambda: Int8Engine(int8.model, cfg.cell, cfg.units, dense, threads=1)
        ways["int8, 2 threads"] = lambda: Int8Engine(int8.model, cfg.cell, cfg.units, dense, threads=2)
    engines = {way: make() for way, make in ways.items()}
    if args.busy:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    seconds = {way: [0.0, 0.0] for way in ways}  # one stream, many
    per_round = max(1, args.length // args.rounds)
    try:
        for _ in range(args.rounds):
            for way, engine in engines.items():
                gen.stepper = engine
                gen.reset()
                t0 = time.perf_counter()
                sum(1 for _ in gen.stream("ROMEO:", per_round, temperature=0.8, rng_seed=0))
                t1 = time.perf_counter()
                sum(1 for _ in gen.stream_many("ROMEO:", args.num_samples, per_round, temperature=0.8, rng_seed=0))
                seconds[way][0] += t1 - t0
                seconds[way][1] += time.perf_counter() - t1
    finally:
        if args.busy:
            hog.kill()
    chars = per_round * args.rounds
    speeds = {way: (chars / one, chars * args.num_samples / many) for way, (one, many) in seconds.items()}
    if "2 cores" in engines:
        settled = (engines["2 cores"].one_row.use_two, engines["2 cores"].many_rows.use_two)
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
    if "2 cores" in engines:
        print(f"{'another process kept one core busy; ' if args.busy else ''}allowed two cores, the steppers "
              f"ended on two: one stream {settled[0]}, many {settled[1]}")
    if "int8" in precisions:
        print(f"int8 conversion (TFLite dynamic range, then cached by chargen): {convert_s:.1f} s")
    if "int8" in precisions and "fp32" in precisions:
        from chargen.cores import step_threads
        from chargen.quantized import int8_threads

        # what the Generator uses by default in each precision
        defaults = ("int8, 2 threads" if int8_threads() == 2 else "int8, 1 thread",
                    "2 cores" if step_threads() == 2 else "1 core")
        for k, what in ((0, "one stream"), (1, f"{args.num_samples} samples")):
            best = [max((speeds[w][k], w) for w in speeds if w.startswith("int8") == is_int8) for is_int8 in (True, False)]
            for label, (a, b) in (("defaults", [(speeds[w][k], w) for w in defaults]), ("fastest of each", best)):
                ratio = a[0] / b[0]
                print(f"int8 / fp32, {what}, {label}: {a[1]} {a[0]:,.0f} / {b[1]} {b[0]:,.0f} chars/s = {ratio:.2f}x"
                      f"   target 3x: {'met' if ratio >= 3 else 'missed'}")
    import roofline

    peaks = roofline.measure()
    print(peaks.describe())
    for way, (one, _) in speeds.items():
        per_weight = 1 if way.startswith("int8") else 4
        gbs = one * roofline.weight_bytes_per_step(cfg.embed, cfg.units, cfg.vocab_size, per_weight) / 1e9
        print(roofline.line(f"one stream, {way}: weights read", gbs, peaks.cache_gbs, "GB/s", "the in-cache read"))
    print(f"time to first character (build + load + prime): {t_first:.2f} s")
    print(f"max |p_numpy - p_keras| over 200 chars: {diff:.1e}")


if __name__ == "__main__":
    main()
