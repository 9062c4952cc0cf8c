"""The single-step TensorFlow graph that the SavedModel and TFLite exports (and the int8 engine) run.

One character id and the LSTM state in, the next-token logits and probabilities and the new
state out, as plain tensors under the same names:

    inputs   token (rows,) int32, h0 c0 h1 c1 ... (rows, units) float32
    outputs  logits (rows, V), probs (rows, V), h0 c0 h1 c1 ... (rows, units) float32

The state lives outside the graph: the caller owns it, which is what lets a server keep one per
user, or a phone app pause and resume. The maths is the numpy engine's (chargen.sampling.NumpyLSTM,
Keras gate order i, f, c, o) built from the same arrays, and `check_against_numpy` streams a few
tokens through what was written and through that engine before an export is put in place.
(chargen/net will give each cell its own step graph; this is the LSTM's. The names keep their exporting.py
underscores so that work lands here unchanged.)
"""

from __future__ import annotations

import numpy as np

from chargen.sampling import NumpyLSTM

SIGNATURE = "serving_default"


def state_names(layers: int) -> list[tuple[str, str]]:
    """The (h, c) input and output names per LSTM layer: [("h0", "c0"), ("h1", "c1"), ...]."""
    return [(f"h{i}", f"c{i}") for i in range(layers)]


def _numpy_stepper(weights: list[np.ndarray], layers: int) -> NumpyLSTM:
    # get_weights() order (chargen.checkpoint.weight_layout): embedding, (kernel, recurrent, bias) per layer, dense
    per_layer = [tuple(weights[1 + 3 * i: 4 + 3 * i]) for i in range(layers)]
    return NumpyLSTM(weights[0], per_layer, weights[-2], weights[-1])


def _step_module(stepper: NumpyLSTM, units: tuple[int, ...], rows: int | None = 1):
    """A tf.Module holding the arrays as (non-trainable) variables, with `step` as a tf.function.

    `rows` is the batch of the step's signature: 1 for an export, None (any number of rows, set
    by the runtime) for chargen's own int8 engine (chargen/quantized.py).
    """
    import tensorflow as tf

    names = state_names(len(units))
    specs = [tf.TensorSpec((rows,), tf.int32, name="token")]
    for (h, c), u in zip(names, units):
        specs += [tf.TensorSpec((rows, u), tf.float32, name=h), tf.TensorSpec((rows, u), tf.float32, name=c)]

    class CharStep(tf.Module):
        def __init__(self):
            super().__init__(name="chargen_step")
            var = lambda a, n: tf.Variable(a, trainable=False, name=n)  # noqa: E731
            self.first_table = var(stepper.first_table, "first_table")  # id -> layer-0 input pre-activations
            self.first_rec = var(stepper.first_rec, "first_recurrent")
            self.stacked = [(var(k, f"stacked_kernel_{i + 1}"), var(b, f"bias_{i + 1}"))
                            for i, (k, b) in enumerate(stepper.stacked)]
            self.dense_kernel = var(stepper.dense_kernel, "dense_kernel")
            self.dense_bias = var(stepper.dense_bias, "dense_bias")

        @tf.function(input_signature=specs)
        def step(self, token, *state):
            out, x = {}, None
            for i, (hn, cn) in enumerate(names):
                h, c = state[2 * i], state[2 * i + 1]
                if i == 0:
                    z = tf.gather(self.first_table, token) + tf.matmul(h, self.first_rec)
                else:
                    kernel, bias = self.stacked[i - 1]
                    z = tf.matmul(tf.concat([x, h], axis=1), kernel) + bias
                i_g, f_g, g, o_g = tf.split(z, 4, axis=1)  # Keras gate order: input, forget, cell, output
                c = tf.sigmoid(f_g) * c + tf.sigmoid(i_g) * tf.tanh(g)
                h = tf.sigmoid(o_g) * tf.tanh(c)
                out[hn], out[cn] = h, c
                x = h
            logits = tf.matmul(x, self.dense_kernel) + self.dense_bias
            return {"logits": logits, "probs": tf.nn.softmax(logits), **out}

    return CharStep()


def check_against_numpy(step, what: str, stepper: NumpyLSTM, units: tuple[int, ...], vocab_size: int,
                        steps: int = 8) -> None:
    """Stream a few tokens through a loaded step (step(token=..., h0=..., ...) -> dict) and the numpy engine."""
    names = state_names(len(units))
    state = [(np.zeros((1, u), np.float32), np.zeros((1, u), np.float32)) for u in units]
    feed = {n: a for (hn, cn), (h, c) in zip(names, state) for n, a in ((hn, h), (cn, c))}
    for t in range(steps):
        token = np.array([(7 * t + 1) % vocab_size], np.int32)
        got = {k: np.asarray(v) for k, v in step(token=token, **feed).items()}
        logits, state = stepper.step(token, state)
        if not np.allclose(got["logits"], logits, atol=1e-4, rtol=1e-4):
            raise RuntimeError(f"the exported {what} model disagrees with chargen's numpy engine at step {t} "
                               f"(max |diff| {np.abs(got['logits'] - logits).max():.3g}); this is a bug")
        feed = {n: got[n] for pair in names for n in pair}
