"""The int8 generation engine: the exported step with int8 weights, run by LiteRT (XNNPACK).

It has the numpy engine's interface (chargen.net.numpy_engine.NumpyEngine, chargen.cores.Stepper):
`step(ids (R,), state) -> (logits (R, V), new state)`, pure, any number of rows R,
`logits(top_h)` and `zero_state(rows)`, so the Generator (one stream and stream_many),
evaluation and a server can take either engine, for any cell. The output layer runs in float32
numpy on the top layer's h, in `step` as in `logits`, so a state set by hand predicts exactly
what the step that reached it predicted.

What runs: chargen.exporters.step builds the single-step graph (the one `chargen export` writes),
here with a free number of rows; TFLite's converter applies dynamic-range quantization (the
weight matrices become int8, one scale per output column; at run time each row's activations
are quantized to int8 before every product; inputs, outputs, gates and the state stay
float32) and LiteRT's XNNPACK runs the int8 products (VNNI where the CPU has it). One stream is
bound by reading the weights once per character, so a quarter of the bytes is most of the gain.

fp32 (the numpy engine) stays the exact reference; int8 is close, not equal. A converted model
is checked against the numpy engine on every load (CHECK_STEPS steps, probabilities within
CHECK_TOLERANCE), so a wrong or stale file is never used.

Converting takes seconds (TensorFlow's converter), so the result is cached, keyed by a hash of
the weights: under $CHARGEN_CACHE, else $XDG_CACHE_HOME/chargen, else ~/.cache/chargen, in
int8/<hash>.tflite, written atomically (temp file, fsync, rename). Never beside the snapshot:
that folder belongs to a run that may still be training. A cache that cannot be written only
costs the conversion next time.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from chargen.config import ModelConfig
from chargen.net import get_cell
from chargen.net.layout import State, zero_state

CACHE_VERSION = 2  # part of the key: bump when the conversion changes (2: the cell is part of the key)
CHECK_STEPS, CHECK_TOLERANCE = 8, 0.25  # max |p_int8 - p_fp32| over the check's steps
MAX_RUNNERS = 4  # interpreters kept, one per row count in use (each plans its own buffers)



def int8_threads() -> int:
    """LiteRT threads for a step: 1, or 2 with CHARGEN_THREADS=2.

    Measured at 2x512 (benchmarks/sample_speed.py, docs/performance.md): with the other core busy
    with other work, one thread beat two (one stream 6,121 vs 4,435 chars/s, 16 samples 25,320 vs
    15,010); only under a far heavier load were two ahead, by 4-28%.
    """
    return 2 if os.environ.get("CHARGEN_THREADS", "").strip() == "2" else 1


def cache_dir() -> Path:
    """Where converted models are kept: $CHARGEN_CACHE, $XDG_CACHE_HOME/chargen or ~/.cache/chargen."""
    if os.environ.get("CHARGEN_CACHE"):
        return Path(os.environ["CHARGEN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chargen"


def weights_key(weights: Sequence[np.ndarray], cfg: ModelConfig) -> str:
    """A hash of the weights (dtype, shape and bytes of each array, in order), the cell and the layer sizes."""
    h = hashlib.sha256(f"chargen-int8 v{CACHE_VERSION} cell={cfg.cell} units={list(cfg.units)}".encode())
    for w in weights:
        a = np.ascontiguousarray(w)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()[:32]


class Int8Engine:
    """Embedding -> recurrent layers -> Dense, one step for R rows, on int8 weights (see the module doc)."""

    def __init__(self, model: bytes, cell: str, units: Sequence[int], dense: tuple[np.ndarray, np.ndarray],
                 threads: int | None = None):
        self.model, self.units = model, tuple(int(u) for u in units)
        from chargen.exporters.step import state_names

        self.cell = get_cell(cell)
        self.names = state_names(self.cell, len(self.units))  # the exported graph's state inputs and outputs
        self.dense_kernel, self.dense_bias = (np.asarray(a, np.float32) for a in dense)
        self.threads = threads or int8_threads()
        self._runners: OrderedDict[int, object] = OrderedDict()

    @classmethod
    def from_weights(cls, cfg: ModelConfig, weights: Sequence[np.ndarray], threads: int | None = None,
                     cache: Path | None | bool = True) -> "Int8Engine":
        """The engine for the model `cfg` describes with these weights (get_weights() order), from the cache
        or converted now. `cache`: True for cache_dir(), a folder, or False to convert without caching.
        """
        from chargen.net.numpy_engine import NumpyEngine

        reference = NumpyEngine.from_weights(cfg, list(weights))
        dense = (reference.dense_kernel, reference.dense_bias)
        units = cfg.units
        folder = cache_dir() if cache is True else (Path(cache) if cache else None)
        path = folder / "int8" / f"{weights_key(weights, cfg)}.tflite" if folder else None
        if path is not None and path.is_file():
            engine = cls(path.read_bytes(), cfg.cell, units, dense, threads)
            try:
                engine.check(reference)
                return engine
            except Exception:  # damaged or stale: convert again and replace it
                pass
        engine = cls(_convert(reference), cfg.cell, units, dense, threads)
        engine.check(reference)  # a fresh conversion that fails this is a bug: let it raise
        if path is not None:
            _save(path, engine.model)
        return engine

    def copy(self, threads: int | None = None) -> "Int8Engine":
        """The same model with interpreters of its own (an interpreter serves one thread at a time)."""
        return Int8Engine(self.model, self.cell.name, self.units, (self.dense_kernel, self.dense_bias),
                          threads or self.threads)

    def step(self, ids: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """ids (R,) -> (logits (R, V), new state). Pure: the given state is not modified."""
        ids = np.asarray(ids, np.int32).reshape(-1)
        feed = {"token": ids}
        for names, arrays in zip(self.names, state):
            feed.update((n, np.asarray(a, np.float32)) for n, a in zip(names, arrays))
        out = self._runner(len(ids))(**feed)
        state = [tuple(out[n] for n in names) for names in self.names]
        return self.logits(state[-1][0]), state

    def zero_state(self, rows: int = 1) -> State:
        return zero_state(self.cell.name, self.units, rows)

    def logits(self, top_h: np.ndarray) -> np.ndarray:
        """The next-token logits (R, V) from the top layer's h, in float32 (the same in `step`)."""
        return top_h @ self.dense_kernel + self.dense_bias

    def _runner(self, rows: int):
        runner = self._runners.get(rows)
        if runner is None:
            from chargen._quiet import native_stderr_hidden
            from chargen.exporters.tflite import SIGNATURE, tflite_interpreter

            zeros = {n: np.zeros((rows, u), np.float32) for names, u in zip(self.names, self.units) for n in names}
            # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on the first call,
            # when it plans the buffers for this many rows: make that call here, quietly.
            with native_stderr_hidden():
                runner = tflite_interpreter(model_content=self.model, num_threads=self.threads
                                            ).get_signature_runner(SIGNATURE)
                runner(token=np.zeros(rows, np.int32), **zeros)
            if len(self._runners) >= MAX_RUNNERS:
                self._runners.popitem(last=False)
            self._runners[rows] = runner
        else:
            self._runners.move_to_end(rows)
        return runner

    def check(self, reference, steps: int = CHECK_STEPS) -> None:
        """Step this engine and the fp32 numpy engine side by side; RuntimeError if they drift apart."""
        vocab = reference.dense_bias.shape[0]
        ours = theirs = self.zero_state(1)
        for t in range(steps):
            token = np.array([(7 * t + 1) % vocab])
            got, ours = self.step(token, ours)
            want, theirs = reference.step(token, theirs)
            gap = float(np.abs(_softmax(got) - _softmax(want)).max())
            if not gap <= CHECK_TOLERANCE:  # NaN too
                raise RuntimeError(f"the int8 model disagrees with the fp32 engine at step {t} "
                                   f"(max |p_int8 - p_fp32| {gap:.3g} > {CHECK_TOLERANCE})")


def _convert(reference) -> bytes:
    from chargen._quiet import native_stderr_hidden
    from chargen.exporters.step import step_module
    from chargen.exporters.tflite import to_tflite

    with native_stderr_hidden():  # the converter logs to stderr from C++
        return to_tflite(step_module(reference, rows=None), int8=True)


def _save(path: Path, model: bytes) -> None:
    from chargen.checkpoint import write_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, model)
    except OSError as e:  # only a lost cache: say so once, go on
        print(f"chargen: note: could not cache the int8 model in {path.parent} ({e.strerror or e}); "
              "it will be converted again next time (set CHARGEN_CACHE to a writable folder)", file=sys.stderr)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)
