"""What setting numpy's BLAS threads costs, by each way of doing it, next to one generation step.

    python benchmarks/blas_control.py                 # 2x512 step for scale
    python benchmarks/blas_control.py --units 256,256

chargen.cores sets the thread count around every per-character step (get, and set when it differs,
then the same to put it back), so the way it is set must cost little next to a step of ~150-300 µs.
Timed here, each as one "set 2, get, set 1" round (the cost of a step that switches and switches back):
chargen's ctypes calls (chargen/blas.py), threadpoolctl's library object, its controller's `limit()`
context, and `threadpool_limits()`. Each figure is the best of 5 repeats, with its ratio to chargen's
way measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the CLI sets it (chargen/cli.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def best_us(fn, calls: int, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t) / calls)
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", default="512,512", help="model for the one-row step timed for scale")
    ap.add_argument("--calls", type=int, default=20000, help="rounds for the cheap ways (the slow ones run fewer)")
    args = ap.parse_args()
    import numpy as np
    from threadpoolctl import ThreadpoolController, threadpool_limits

    from chargen.blas import blas_threads
    from chargen.net.numpy_engine import NumpyEngine

    control = blas_threads()
    if control is None:
        sys.exit("no OpenBLAS thread control here (chargen runs on one core): nothing to compare")
    t = time.perf_counter()
    controller = ThreadpoolController()
    discovery_ms = (time.perf_counter() - t) * 1e3
    lib = next(c for c in controller.select(user_api="blas").lib_controllers if c.filepath == control.path)

    def chargen_way():
        control.set(2), control.get(), control.set(1)

    def library_object():
        lib.set_num_threads(2), lib.get_num_threads(), lib.set_num_threads(1)

    def limit_context():
        with controller.limit(limits=2, user_api="blas"):
            pass

    def limits_context():
        with threadpool_limits(limits=2, user_api="blas"):
            pass

    units = tuple(int(u) for u in args.units.split(","))
    rng = np.random.default_rng(0)
    vocab, embed = 65, 64
    kernels, sizes = [], [embed, *units[:-1]]
    for n_in, u in zip(sizes, units):
        kernels.append((rng.normal(0, 0.05, (n_in, 4 * u)).astype(np.float32),
                        rng.normal(0, 0.05, (u, 4 * u)).astype(np.float32), np.zeros(4 * u, np.float32)))
    lstm = NumpyEngine("lstm", rng.normal(0, 0.05, (vocab, embed)).astype(np.float32), kernels,
                       rng.normal(0, 0.05, (units[-1], vocab)).astype(np.float32), np.zeros(vocab, np.float32))
    state = lstm.zero_state(1)
    step_us = best_us(lambda: lstm.step(np.array([3]), state), 2000)

    base = best_us(chargen_way, args.calls)
    print(f"OpenBLAS: {control.path}")
    print(f"threadpoolctl discovery (once, at the first Generator): {discovery_ms:.1f} ms")
    print(f"one-row step at {args.units}: {step_us:.1f} µs\n")
    print(f"{'way (set 2, get, set 1)':42s} {'µs/round':>9s} {'x chargen':>10s} {'% of a step':>12s}")
    for name, fn, calls in [("chargen: ctypes, functions looked up once", chargen_way, args.calls),
                            ("threadpoolctl library object", library_object, args.calls),
                            ("threadpoolctl controller.limit() context", limit_context, args.calls // 10),
                            ("threadpoolctl threadpool_limits() context", limits_context, args.calls // 100)]:
        us = base if fn is chargen_way else best_us(fn, calls)
        print(f"{name:42s} {us:9.2f} {us / base:10.1f} {100 * us / step_us:11.1f}%")


if __name__ == "__main__":
    main()
