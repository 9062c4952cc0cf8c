"""Will it fit? Memory estimates checked before a model is built, so a typo in --units is one line, not an OOM.

The estimates are lower bounds in float32 bytes: the weights and what training keeps per weight
(gradients, Adam's two slots), plus the activations a (batch, seq_len) step holds for backprop,
the logits and their gradients. TensorFlow adds more on top, so a model that passes can still
not fit; one that fails cannot. Available memory is the kernel's MemAvailable, or the container's
(cgroup) limit less its usage where that is lower; where neither can be read nothing is refused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from chargen.config import ModelConfig
from chargen.errors import ConfigError
from chargen.net import get_cell

FLOAT = 4  # bytes


def weight_count(cfg: ModelConfig) -> int:
    """How many numbers the model's weights hold (embedding, recurrent layers, dense)."""
    from chargen.net.layout import weight_shapes

    return sum(math.prod(s) for s in weight_shapes(cfg))


def training_bytes(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """At least this much is needed to train: weights, gradients and Adam's two slots, a validation copy of
    the weights, and per step the embeddings, the gates and the state tensors per unit (LSTM: 4 + 2, GRU: 3 + 1),
    logits and their gradient."""
    cell = get_cell(cfg.cell)
    per_position = cfg.embed + sum((cell.gates + len(cell.state)) * u for u in cfg.units) + 2 * cfg.vocab_size
    return FLOAT * (5 * weight_count(cfg) + batch_size * seq_len * per_position)


def evaluation_bytes(cfg: ModelConfig, rows: int, seq_len: int) -> int:
    """At least this much is needed to score a text: the weights, and per step the activations and logits."""
    per_position = cfg.embed + sum(2 * u for u in cfg.units) + cfg.vocab_size + 3  # + x, y and weight arrays
    return FLOAT * (weight_count(cfg) + rows * seq_len * per_position)


def sampling_bytes(cfg: ModelConfig, rows: int, length: int) -> int:
    """At least this much is needed to generate `rows` samples together: the Keras and numpy copies of the
    weights, each row's state and float64 logits, and a reference per generated piece of text kept for output."""
    per_row = FLOAT * len(get_cell(cfg.cell).state) * sum(cfg.units) + 8 * 2 * cfg.vocab_size + 8 * length
    return 2 * FLOAT * weight_count(cfg) + rows * per_row


def check_fits(need: int, what: str, fix: str, arguments: tuple[str, ...] = ()) -> None:
    """ConfigError "... needs at least X of memory and Y is available; FIX" when `need` is more than is available
    (`arguments`: those that `what` and `fix` name, as ChargenError.arguments)."""
    have = available_bytes()
    if have is not None and need > have:
        raise ConfigError(f"{what} needs at least {size_text(need)} of memory, and {size_text(have)} is available; {fix}",
                          arguments=arguments)


def available_bytes() -> int | None:
    """Memory this process can still get: the lowest of the kernel's MemAvailable and the cgroup's room."""
    known = [n for n in (_meminfo_available(), _cgroup_room()) if n is not None]
    if not known:
        try:
            known = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
        except (ValueError, OSError, AttributeError):
            return None
    return min(known)


def size_text(n: int) -> str:
    """1536 -> '1.5 KiB'; sizes past exbibytes as a power of ten."""
    for power, unit in enumerate(("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")):
        if n < 1024 ** (power + 1) or unit == "EiB" and n < 1024 ** 8:
            return f"{n} bytes" if power == 0 else f"{n / 1024 ** power:,.1f} {unit}"
    return f"about 10^{len(str(n)) - 1} bytes"


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """limit - usage of this process's memory cgroup (v2, else v1); None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text(encoding="ascii").strip()
            usage = int(Path(usage_file).read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 2**60:  # v1 writes a huge number for "no limit"
            return None
        return max(int(limit) - usage, 0)
    return None
