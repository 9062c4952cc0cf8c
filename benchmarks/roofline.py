"""The machine's measured ceilings, and where a benchmark's figure sits under them.

    python benchmarks/roofline.py          # the peaks alone

train_speed.py and sample_speed.py import this to print, next to their own figures:
- training: achieved GFLOP/s (matrix FLOPs per character x characters per second) against a
  large TensorFlow matmul in fp32 and in bf16 on every core (the issue's 4096 x 1024 x 2048);
- one stream of generation: GB/s of weights read (every weight matrix is read once per
  character) against the read bandwidth of a plain matrix-vector product (numpy / OpenBLAS on
  the threads numpy has, one in the benchmarks), for a matrix that fits the CPU's caches (the
  size of a 2x512 model's weights) and for one far larger than them (main memory). A product
  with one row does 2 FLOPs per 4 bytes read, so reading is its whole cost: that is the
  bandwidth an engine that reads every weight once per character can hope for. (Measured here
  under load: numpy's sum reached less than half of it, max about as much.)
The peaks are measured in the same run as the figure they frame, because this host's speed
moves 2x with its neighbours. Only the matrix products are counted: the gate arithmetic,
sampling and Python around them are what the gap to the ceiling is made of.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

GEMM = (4096, 1024, 2048)  # m, k, n of the peak matmul


@dataclass(frozen=True)
class Peaks:
    gflops_fp32: float
    gflops_bf16: float
    cache_gbs: float  # a matrix-vector product over CACHE_BYTES of float32: bytes read per second
    memory_gbs: float  # the same over MEMORY_BYTES

    def describe(self) -> str:
        return (f"machine peaks (this run): TF matmul {'x'.join(map(str, GEMM))} fp32 {self.gflops_fp32:,.1f} GFLOP/s, "
                f"bf16 {self.gflops_bf16:,.1f} GFLOP/s ({self.gflops_bf16 / self.gflops_fp32:.2f}x); numpy "
                f"matrix-vector read {self.cache_gbs:,.1f} GB/s over {CACHE_BYTES >> 20} MB (in cache), "
                f"{self.memory_gbs:,.1f} GB/s over {MEMORY_BYTES >> 20} MB (main memory)")


CACHE_BYTES, MEMORY_BYTES = 12 << 20, 512 << 20


def _best_seconds(fn, repeats: int) -> float:
    """The fastest of `repeats` timed calls (after one untimed): a peak is what the machine can do, and
    on a shared host the slower calls measure the neighbours."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_gflops(dtype: str, repeats: int = 7) -> float:
    """GFLOP/s of one large TensorFlow matmul (oneDNN on a CPU) in `dtype` (float32 or bfloat16)."""
    import tensorflow as tf

    m, k, n = GEMM
    a = tf.cast(tf.random.stateless_normal((m, k), (1, 2)), dtype)
    b = tf.cast(tf.random.stateless_normal((k, n), (3, 4)), dtype)
    product = tf.function(lambda a, b: tf.reduce_sum(tf.cast(tf.matmul(a, b)[:1, :1], tf.float32)))
    return 2 * m * k * n / _best_seconds(lambda: product(a, b).numpy(), repeats) / 1e9


def read_gbs(nbytes: int, repeats: int = 7) -> float:
    """GB/s read by numpy's product of one row with a float32 (1024, n) matrix of `nbytes` (repeated when small)."""
    matrix = np.ones((1024, nbytes // 4 // 1024), np.float32)
    row = np.ones(1024, np.float32)
    times = max(1, (64 << 20) // nbytes)

    def read():
        for _ in range(times):
            row @ matrix
    return nbytes * times / _best_seconds(read, repeats) / 1e9


def measure() -> Peaks:
    return Peaks(matmul_gflops("float32"), matmul_gflops("bfloat16"), read_gbs(CACHE_BYTES), read_gbs(MEMORY_BYTES))


def matmul_flops_per_char(embed: int, units: tuple[int, ...], vocab: int, training: bool, gates: int = 4) -> float:
    """Matrix FLOPs per character: 2 per multiply-add of every product; training is 3x (backward: 2 per forward product).

    `gates`: gate blocks of a recurrent layer (the LSTM's 4, the GRU's 3)."""
    flops, inputs = 0, embed
    for u in units:
        flops += 2 * (inputs + u) * gates * u
        inputs = u
    flops += 2 * inputs * vocab
    return 3.0 * flops if training else float(flops)


def weight_bytes_per_step(embed: int, units: tuple[int, ...], vocab: int, bytes_per_weight: float,
                          gates: int = 4) -> float:
    """Bytes of weights one generation step reads: every matrix once (the first layer's input projection
    is a lookup table, of which one row is read, in float32). `gates`: the LSTM's 4, the GRU's 3."""
    weights, inputs = 0, None
    for u in units:
        weights += (0 if inputs is None else inputs * gates * u) + u * gates * u
        inputs = u
    weights += inputs * vocab
    return weights * bytes_per_weight + 4 * gates * units[0]


def line(what: str, achieved: float, peak: float, unit: str, peak_name: str) -> str:
    return f"  roofline: {what} {achieved:,.1f} {unit} = {achieved / peak:.0%} of {peak_name} ({peak:,.1f} {unit})"


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print(measure().describe())
