"""Which number format does the arithmetic: `--precision` for training, generation and evaluation.

Training (`chargen train --precision auto|bf16|fp32`, TrainConfig.precision):
- fp32: everything in float32.
- bf16: mixed precision in chargen's fast training layer: the recurrent layers' matrix products
  take bfloat16 operands; the weights (the optimizer's master copy), the state, the gates, the
  output layer, the softmax and the loss stay float32, and so do checkpoints
  (chargen/net/recurrence.py).
- auto: bf16 where it pays, else fp32. It pays on a CPU with native BF16 instructions
  (AVX512_BF16 or AMX-BF16) and layers big enough that the products dominate: the bf16 time
  loop calls TensorFlow's bf16 matmul and an XLA-fused cell per step, which costs more per step
  than fp32's single XLA loop, so small layers lose (BF16_MIN_UNITS, measured in
  docs/performance.md). On a GPU (where auto picks the stock Keras layer for cuDNN) it stays
  fp32: nothing was measured there. A new run records what auto chose, so a resume continues
  in the same precision; runs from before this option trained, and resume, in fp32.
- The stock Keras layers (`--kernel keras`) are refused in bf16: under Keras's mixed_bfloat16
  policy they carry their state through the window in bfloat16 (their state variables are
  float32, but the loop's h and c are not), which is not the float32 state chargen keeps.

Generation and evaluation (`--precision fp32|int8`): fp32 is the exact numpy engine (and the
Keras model for eval); int8 is chargen/quantized.py's LiteRT engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from chargen.config import TrainConfig
from chargen.errors import ConfigError

GENERATION = ("fp32", "int8")
TRAINING = ("auto", "bf16", "fp32")
BF16_MIN_UNITS = 256  # auto: bf16 only when the widest recurrent layer has at least this many units
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def generation_precision(precision: object) -> str:
    """'fp32' or 'int8', else ConfigError naming precision."""
    if precision not in GENERATION:
        raise ConfigError(f"precision must be one of {', '.join(GENERATION)} for sampling and evaluation, "
                          f"got {precision!r}", arguments=("precision",))
    return str(precision)


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True where the CPU flags list AVX512_BF16 or AMX-BF16 (Linux; elsewhere False: unknown)."""
    try:
        flags = set(cpuinfo.read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return False
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def training_precision(tcfg: TrainConfig, units: Sequence[int], kernel: str, gpu: bool) -> tuple[str, str]:
    """(fp32 or bf16, why) for a new run with this training kernel ("fast" or "keras"); ConfigError for bf16 with keras."""
    if tcfg.precision == "bf16":
        if kernel != "fast":
            how = "kernel 'auto' chose it because a GPU is visible" if tcfg.kernel == "auto" else "kernel 'keras'"
            raise ConfigError(f"precision 'bf16' needs kernel 'fast' ({how}): the stock Keras layer would carry its "
                              "state in bfloat16; set kernel 'fast' or precision 'fp32'", arguments=("precision", "kernel"))
        return "bf16", "asked for"
    if tcfg.precision == "fp32":
        return "fp32", "asked for"
    if gpu or kernel != "fast":
        return "fp32", "auto: bf16 is used on CPUs only (not measured on a GPU)"
    if not cpu_has_native_bf16():
        return "fp32", "auto: this CPU has no native BF16 (AVX512_BF16 or AMX)"
    if max(units) < BF16_MIN_UNITS:
        return "fp32", f"auto: layers under {BF16_MIN_UNITS} units train faster in fp32"
    return "bf16", "auto: this CPU has native BF16"


def training_kernel(tcfg: TrainConfig, gpu: bool) -> str:
    """The training kernel --kernel names: auto is keras (cuDNN) where a GPU is visible, else fast."""
    return tcfg.kernel if tcfg.kernel != "auto" else ("keras" if gpu else "fast")


def gpu_visible() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def describe(precision: str, why: str) -> str:
    return f"training precision: {precision} ({why})"

