"""The LSTM cell: Keras's layout and maths, as a fast training layer, a numpy step and a TensorFlow step.

Everything here computes what `keras.layers.LSTM(units, return_sequences=True, stateful=True)`
computes, on its weights as they are (gate blocks i, f, c, o; sigmoid gates, tanh candidate and
output; unit_forget_bias):

    kernel            (D, 4u)   x's projection            z = x W + h U + b
    recurrent_kernel  (u, 4u)   h's projection            c' = f c + i g,   h' = o tanh(c')
    bias              (4u,)     initialized (0, 1, 0, 0) per block (the forget gate's is 1)

The state is (h, c): two (B, u) per layer. With these settings (tanh, sigmoid, no recurrent
dropout, unroll=False, use_bias) the stock layer stays eligible for cuDNN on a GPU.

The training step's backward, with dc = dL/dc_t in full and dh = dL/dh_t:
    dc += dh o (1 - tanh(c)^2)     dz = [dc g i(1-i), dc c_prev f(1-f), dc i(1-g^2), dh tanh(c) o(1-o)]
    dc_prev = dc f                 dL/dh_prev = dz U^T
dz is both dL/d(x W + b) and dL/d(h U): the loop keeps one tensor for the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from chargen.net.cell import Cell, NumpyLayer, halves_of, unit_columns


def _unit_forget_bias(units: int):
    """Keras's LSTMCell bias initializer with unit_forget_bias=True: (0, 1, 0, 0) per gate block."""
    def init(shape, dtype=None):
        return np.concatenate([np.zeros(units), np.ones(units), np.zeros(2 * units)]).astype(dtype or "float32")
    return init


# ---------------------------------------------------------------- TensorFlow: training

def _maths():
    import tensorflow as tf

    from chargen.net.recurrence import CellMaths

    def step(xp, m, h, carries):
        """One LSTM step from the pre-activations z = x W + b + h U and the previous c.

        Returns the new h and (c,) and what the backward pass needs of this step: the step-local
        derivatives, computed here while the gate values are at hand (with XLA they fuse into the
        step for free; as a separate pass over the whole window they cost a third of the backward).
        """
        (c,) = carries
        zi, zf, zg, zo = tf.split(xp + m, 4, axis=1)
        i, f, g, o = tf.sigmoid(zi), tf.sigmoid(zf), tf.tanh(zg), tf.sigmoid(zo)
        c_new = f * c + i * g
        tc = tf.tanh(c_new)
        h = o * tc
        local = tf.concat([g * i * (1.0 - i), c * f * (1.0 - f), i * (1.0 - g * g), tc * o * (1.0 - o)], axis=1)
        return h, (c_new,), (o * (1.0 - tc * tc), local, f)

    def back(dh, d_carries, saved):
        """One step back: dz_t (both dL/d(x W + b)_t and dL/d(h U)_t) and dL/dc_{t-1}."""
        (dc,), (dc_from_h, local, f) = d_carries, saved
        dc = dc + dh * dc_from_h
        dz = tf.concat([dc, dc, dc, dh], axis=1) * local
        return dz, dz, None, (dc * f,)

    return CellMaths("lstm", gates=4, carries=1, saved_widths=(1, 4, 1), step=step, back=back, dm_is_dxp=True)


def recurrence(xp, h0, c0, rec, jit: bool = True, precision: str = "fp32"):
    """The LSTM recurrence over a time-major window, with its hand-written gradient.

    xp: (T, B, 4u) input projections (x W + b); h0, c0: (B, u); rec: (u, 4u), all float32.
    Returns hs (T, B, u) and the final c (B, u); the final h is hs[-1].
    """
    from chargen.net.recurrence import recurrence_of

    hs, (c_last,) = recurrence_of("lstm")(xp, h0, (c0,), rec, None, jit, precision)
    return hs, c_last


# ---------------------------------------------------------------- numpy: generation

@dataclass(frozen=True)
class LSTMPart:
    """All four gates of some units of a layer, reordered (i, f, o, g) so the sigmoid gates are one slice."""

    matrix: np.ndarray  # the recurrent kernel's columns (first layer) or [kernel; recurrent] stacked
    added: np.ndarray  # the first layer's id -> pre-activation table (V, 4w), else the bias (4w,)
    units: slice


class NumpyLSTMLayer(NumpyLayer):
    """One LSTM layer's step in numpy for R rows (chargen.net.cell.NumpyLayer).

    The first layer folds embedding @ kernel + bias into one table, id -> 4u pre-activations, so
    its step is one row per id plus h U. A deeper layer stacks [kernel; recurrent_kernel], so
    [x, h] @ it is one matrix product instead of two and an add. `arrays()` keeps Keras's order.
    """

    def __init__(self, kernel: np.ndarray, recurrent_kernel: np.ndarray, bias: np.ndarray,
                 embedding: np.ndarray | None = None):
        self.units = recurrent_kernel.shape[0]
        self.by_id = embedding is not None
        if self.by_id:
            self.matrix = recurrent_kernel.astype(np.float32)
            self.added = (embedding @ kernel + bias).astype(np.float32)
        else:
            self.matrix = np.vstack([kernel, recurrent_kernel]).astype(np.float32)
            self.added = bias.astype(np.float32)

    def parts(self, halves: bool) -> list[LSTMPart]:
        u = self.units
        return [LSTMPart(np.ascontiguousarray(self.matrix[:, cols]), np.ascontiguousarray(self.added[..., cols]),
                         slice(lo, hi))
                for lo, hi in halves_of(u, halves) for cols in [unit_columns(u, lo, hi, (0, 1, 3, 2))]]

    def prepare(self, inp: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray | None]:
        """(what multiplies the part's matrix, the ids for the table or None): (h, ids) or ([x, h], None)."""
        return (state[0], inp) if self.by_id else (np.concatenate([inp, state[0]], axis=1), None)

    @staticmethod
    def step_part(prepared, state, part: LSTMPart) -> tuple[np.ndarray, np.ndarray]:
        """(h, c) of the part's units. float32, in few numpy calls (at batch 1 their overhead is a third of the step)."""
        xh, ids = prepared
        z = xh @ part.matrix
        z += part.added if ids is None else part.added[ids]  # the first layer adds its table row per id
        u = z.shape[1] // 4
        gates = z[:, :3 * u]  # i, f, o: sigmoid(x) = (tanh(x / 2) + 1) / 2, in place
        gates *= 0.5
        np.tanh(gates, out=gates)
        gates += 1.0
        gates *= 0.5
        g = np.tanh(z[:, 3 * u:])
        c = gates[:, u:2 * u] * state[1][:, part.units]
        g *= gates[:, :u]
        c += g
        h = np.tanh(c)
        h *= gates[:, 2 * u:3 * u]
        return h, c

    def arrays(self) -> dict[str, np.ndarray]:
        if self.by_id:
            return {"input_table": self.added, "recurrent_kernel": self.matrix}
        return {"stacked_kernel": self.matrix, "bias": self.added}


# ---------------------------------------------------------------- the cell

class LSTM(Cell):
    name = "lstm"
    state = ("h", "c")
    gates = 4
    keras_cell = "lstm_cell"
    js_step = "lstm"

    def weight_shapes(self, input_dim: int, units: int) -> dict[str, tuple[int, ...]]:
        return {"kernel": (input_dim, 4 * units), "recurrent_kernel": (units, 4 * units), "bias": (4 * units,)}

    def initializers(self, units: int) -> dict[str, Any]:
        return {"kernel": "glorot_uniform", "recurrent_kernel": "orthogonal", "bias": _unit_forget_bias(units)}

    def split_bias(self, bias):
        return bias, None

    def maths(self):
        return _maths()

    def keras_layer(self, units: int, name: str):
        import keras

        return keras.layers.LSTM(units, return_sequences=True, stateful=True, name=name)

    def numpy_layer(self, kernel, recurrent_kernel, bias, embedding=None) -> NumpyLSTMLayer:
        return NumpyLSTMLayer(kernel, recurrent_kernel, bias, embedding)

    def tf_step(self, arrays: Mapping[str, Any], inp, state: Sequence[Any]) -> tuple:
        import tensorflow as tf

        h, c = state
        if "input_table" in arrays:
            z = tf.gather(arrays["input_table"], inp) + tf.matmul(h, arrays["recurrent_kernel"])
        else:
            z = tf.matmul(tf.concat([inp, h], axis=1), arrays["stacked_kernel"]) + arrays["bias"]
        i, f, g, o = tf.split(z, 4, axis=1)  # Keras's gate order: input, forget, cell, output
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        return tf.sigmoid(o) * tf.tanh(c), c


CELL = LSTM()
