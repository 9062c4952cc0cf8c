"""The single-step TensorFlow graph that the SavedModel and TFLite exports (and the int8 engine) run.

One token id and the recurrent state in, the next-token logits and probabilities and the new
state out, as plain tensors under the same names:

    inputs   token (rows,) int32, h0 c0 h1 c1 ... (rows, units) float32     (a GRU: h0 h1 ...)
    outputs  logits (rows, V), probs (rows, V), h0 c0 h1 c1 ... (rows, units) float32

The state lives outside the graph: the caller owns it, which is what lets a server keep one per
user, or a phone app pause and resume. Each layer is its cell's TensorFlow step (`Cell.tf_step`,
chargen/net/<cell>.py) on the arrays of the numpy engine's layer (chargen.net.numpy_engine), so
the graph is written once per cell and this module knows no cell's layout; `check_against_numpy`
streams a few tokens through what was written and through that engine before an export is put
in place.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from chargen.net.cell import Cell
from chargen.net.numpy_engine import NumpyEngine

SIGNATURE = "serving_default"


def state_names(cell: Cell, layers: int) -> list[list[str]]:
    """The state's input and output names per layer: [["h0", "c0"], ["h1", "c1"], ...] (a GRU: [["h0"], ["h1"]])."""
    return [[f"{name}{i}" for name in cell.state] for i in range(layers)]


def step_module(engine: NumpyEngine, rows: int | None = 1):
    """A tf.Module holding the engine's arrays as (non-trainable) variables, with `step` as a tf.function.

    `rows` is the batch of the step's signature: 1 for an export, None (any number of rows, set
    by the runtime) for chargen's own int8 engine (chargen/quantized.py).
    """
    import tensorflow as tf

    cell, names = engine.cell, state_names(engine.cell, len(engine.units))
    specs = [tf.TensorSpec((rows,), tf.int32, name="token")]
    for layer_names, u in zip(names, engine.units):
        specs += [tf.TensorSpec((rows, u), tf.float32, name=n) for n in layer_names]

    class CharStep(tf.Module):
        def __init__(self):
            super().__init__(name="chargen_step")
            var = lambda a, n: tf.Variable(a, trainable=False, name=n)  # noqa: E731
            self.layers = [{k: var(a, f"{cell.name}_{i}_{k}") for k, a in layer.arrays().items()}
                           for i, layer in enumerate(engine.layers)]
            self.dense_kernel = var(engine.dense_kernel, "dense_kernel")
            self.dense_bias = var(engine.dense_bias, "dense_bias")

        @tf.function(input_signature=specs)
        def step(self, token, *state):
            out, x, k = {}, token, len(cell.state)
            for i, (arrays, layer_names) in enumerate(zip(self.layers, names)):
                new = cell.tf_step(arrays, x, state[k * i:k * (i + 1)])
                out.update(zip(layer_names, new))
                x = new[0]
            logits = tf.matmul(x, self.dense_kernel) + self.dense_bias
            return {"logits": logits, "probs": tf.nn.softmax(logits), **out}

    return CharStep()


def check_against_numpy(step: Callable, what: str, engine: NumpyEngine, vocab_size: int, steps: int = 8) -> None:
    """Stream a few tokens through a loaded step (step(token=..., h0=..., ...) -> dict) and the numpy engine."""
    names = state_names(engine.cell, len(engine.units))
    state = engine.zero_state(1)
    feed = {n: a for layer_names, arrays in zip(names, state) for n, a in zip(layer_names, arrays)}
    for t in range(steps):
        token = np.array([(7 * t + 1) % vocab_size], np.int32)
        got = {k: np.asarray(v) for k, v in step(token=token, **feed).items()}
        logits, state = engine.step(token, state)
        if not np.allclose(got["logits"], logits, atol=1e-4, rtol=1e-4):
            raise RuntimeError(f"the exported {what} model disagrees with chargen's numpy engine at step {t} "
                               f"(max |diff| {np.abs(got['logits'] - logits).max():.3g}); this is a bug")
        feed = {n: got[n] for layer_names in names for n in layer_names}
