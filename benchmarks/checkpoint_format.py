"""Checkpoint format 2 (named safetensors) against format 1 (.npz): time to write and read a snapshot's arrays, size.

    python benchmarks/checkpoint_format.py                    # 2x512, embed 64, 65 characters, batch 32
    python benchmarks/checkpoint_format.py --units 1024,1024 --rounds 9

The arrays are a snapshot's three kinds at the given size (weights; Adam's iteration, learning rate
and two slots per weight; the training rows' h and c), random, float32. Each round writes and reads
them in both formats, taking turns, with the writers and readers chargen uses (format 1: np.savez
with fsync and chargen's checked .npz reader, as chargen 0.1 wrote and 0.2 still reads; format 2:
chargen.checkpoint.tensors, header checked against the layout). Printed: the median and best of
the rounds per format, and format 2's as a ratio of format 1's measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chargen.checkpoint.layout import state_layout, weight_layout  # noqa: E402
from chargen.checkpoint.npz import read_npz  # noqa: E402
from chargen.checkpoint.tensors import read_tensors, write_tensors  # noqa: E402
from chargen.config import ModelConfig  # noqa: E402


def snapshot_arrays(cfg: ModelConfig, batch: int, rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    weights = {n: rng.standard_normal(s, np.float32) for n, s in weight_layout(cfg)}
    optimizer = {"iteration": np.array(1000, np.int64), "learning_rate": np.array(3e-3, np.float32)}
    for n, s in weight_layout(cfg):
        optimizer[f"{n}/momentum"] = rng.standard_normal(s, np.float32)
        optimizer[f"{n}/velocity"] = rng.random(s, np.float32)
    state = {n: rng.standard_normal(s, np.float32) for n, s, _ in state_layout(cfg, batch)}
    return {"model": weights, "optimizer": optimizer, "train_state": state}


def write_v1(folder: Path, arrays: dict[str, dict[str, np.ndarray]]) -> None:
    for kind, named in arrays.items():
        with open(folder / f"{kind}.npz", "wb") as f:  # as chargen 0.1 wrote them: by position, fsynced
            np.savez(f, **{f"a{i:04d}": a for i, a in enumerate(named.values())})
            f.flush()
            os.fsync(f.fileno())


def read_v1(folder: Path, arrays) -> None:
    for kind in arrays:
        read_npz(folder / f"{kind}.npz")


def write_v2(folder: Path, arrays: dict[str, dict[str, np.ndarray]]) -> None:
    for kind, named in arrays.items():
        write_tensors(folder / f"{kind}.safetensors", named, {"format": "chargen-checkpoint", "version": "2",
                                                             "content": kind})


def read_v2(folder: Path, arrays) -> None:
    for kind, named in arrays.items():
        read_tensors(folder / f"{kind}.safetensors", {n: (a.dtype, a.shape) for n, a in named.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", default="512,512")
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    cfg = ModelConfig(vocab_size=args.vocab, embed=args.embed, units=tuple(int(u) for u in args.units.split(",")))
    arrays = snapshot_arrays(cfg, args.batch_size, np.random.default_rng(0))
    times = {(fmt, op): [] for fmt in ("npz", "safetensors") for op in ("write", "read")}
    with tempfile.TemporaryDirectory(dir=".") as d:
        folders = {fmt: Path(d) / fmt for fmt in ("npz", "safetensors")}
        for f in folders.values():
            f.mkdir()
        ways = {"npz": (write_v1, read_v1), "safetensors": (write_v2, read_v2)}
        for r in range(args.rounds):
            for fmt in (("npz", "safetensors") if r % 2 == 0 else ("safetensors", "npz")):  # taking turns
                for op, fn in zip(("write", "read"), ways[fmt]):
                    t0 = time.perf_counter()
                    fn(folders[fmt], arrays)
                    times[(fmt, op)].append(time.perf_counter() - t0)
        sizes = {fmt: sum(p.stat().st_size for p in f.iterdir()) for fmt, f in folders.items()}
    n = sum(a.size for named in arrays.values() for a in named.values())
    print(f"units {args.units}, embed {args.embed}, vocab {args.vocab}, batch {args.batch_size}: {n:,} numbers "
          f"in 3 files, {args.rounds} rounds")
    for op in ("write", "read"):
        med = {fmt: statistics.median(times[(fmt, op)]) for fmt in ("npz", "safetensors")}
        best = {fmt: min(times[(fmt, op)]) for fmt in ("npz", "safetensors")}
        print(f"{op:5}  npz median {med['npz'] * 1e3:7.1f} ms (best {best['npz'] * 1e3:6.1f})   safetensors median "
              f"{med['safetensors'] * 1e3:7.1f} ms (best {best['safetensors'] * 1e3:6.1f})   ratio "
              f"{med['safetensors'] / med['npz']:.2f}x")
    print(f"size   npz {sizes['npz']:,} bytes   safetensors {sizes['safetensors']:,} bytes   "
          f"ratio {sizes['safetensors'] / sizes['npz']:.4f}")


if __name__ == "__main__":
    main()
