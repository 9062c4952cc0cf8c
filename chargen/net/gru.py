"""The GRU cell: Keras's layout and maths, as a fast training layer, a numpy step and a TensorFlow step.

Everything here computes exactly what `keras.layers.GRU(units, reset_after=True,
return_sequences=True, stateful=True)` computes (the cuDNN-eligible form, Keras's default), with
its weights as they are (keras/src/layers/rnn/gru.py, GRUCell.build and GRUCell.call,
implementation 2, checked against Keras 3.15):

    kernel            (D, 3u)   x's projection, gate blocks (z, r, h): columns [0,u) [u,2u) [2u,3u)
    recurrent_kernel  (u, 3u)   h's projection, same blocks
    bias              (2, 3u)   row 0 the input bias b_i, row 1 the recurrent bias b_r

    xp = x W + b_i                      m = h_{t-1} U + b_r            (both (B, 3u), split z, r, h)
    z  = sigmoid(xp_z + m_z)            update gate
    r  = sigmoid(xp_r + m_r)            reset gate, applied AFTER the recurrent matmul (reset_after)
    hh = tanh(xp_h + r * m_h)           candidate
    h_t = z * h_{t-1} + (1 - z) * hh    (so z near 1 keeps the old state)

Initializers as GRUCell's: glorot_uniform kernel, orthogonal recurrent kernel, zero bias. The
state is h alone: one (B, u) per layer. For one id at the first layer, xp is a row of the table
embedding @ W + b_i, as the LSTM's numpy layer folds it (chargen/net/lstm.py).

Backward (for the fast training layer's hand-written gradient), with dh = dL/dh_t in full:
    d(xp_z) = d(m_z) = dh (h_{t-1} - hh) z (1 - z)
    d(xp_h)          = dh (1 - z) (1 - hh^2)         d(m_h) = d(xp_h) r
    d(xp_r) = d(m_r) = d(xp_h) m_h r (1 - r)
    dL/dh_{t-1}      = dh z + d(m) U^T
so unlike the LSTM's, the input and recurrent pre-activation gradients differ (in the h block);
d(U) = sum_t h_{t-1}^T d(m_t) and d(b_r) = sum_t d(m_t) are computed once after the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from chargen.net.cell import Cell, NumpyLayer, halves_of, unit_columns

GATES = ("z", "r", "h")  # Keras GRUCell's gate blocks, in column order


# ---------------------------------------------------------------- TensorFlow: training and export

def _gates(xp, m, h):
    """One GRU step from xp = x W + b_i and m = h U + b_r: the new h and the gate values."""
    import tensorflow as tf

    xz, xr, xh = tf.split(xp, 3, axis=1)
    mz, mr, mh = tf.split(m, 3, axis=1)
    z, r = tf.sigmoid(xz + mz), tf.sigmoid(xr + mr)
    hh = tf.tanh(xh + r * mh)
    return z * h + (1.0 - z) * hh, z, r, hh, mh


def _maths():
    import tensorflow as tf

    from chargen.net.recurrence import CellMaths

    def step(xp, m, h, carries):
        """The step and what the backward needs of it (module docstring), while the gates are at hand."""
        h_new, z, r, hh, mh = _gates(xp, m, h)
        local = tf.concat([(h - hh) * z * (1.0 - z), (1.0 - z) * (1.0 - hh * hh), mh * r * (1.0 - r)], axis=1)
        return h_new, (), (local, r, z)

    def back(dh, d_carries, saved):
        local, r, z = saved
        for_z, for_h, for_r = tf.split(local, 3, axis=1)
        d_z, d_h = dh * for_z, dh * for_h
        d_r = d_h * for_r
        return tf.concat([d_z, d_r, d_h], axis=1), tf.concat([d_z, d_r, d_h * r], axis=1), dh * z, ()

    return CellMaths("gru", gates=3, carries=0, saved_widths=(3, 1, 1), step=step, back=back)


def recurrence(xp, h0, rec, rec_bias, jit: bool = True, precision: str = "fp32"):
    """The GRU recurrence over a time-major window with its hand-written gradient.

    xp: (T, B, 3u) input projections (x W + b_i); h0: (B, u); rec: (u, 3u); rec_bias: (3u,).
    Returns hs (T, B, u); the final state is hs[-1].
    """
    from chargen.net.recurrence import recurrence_of

    return recurrence_of("gru")(xp, h0, (), rec, rec_bias, jit, precision)[0]


# ---------------------------------------------------------------- numpy: generation

@dataclass(frozen=True)
class GRUPart:
    """All three gates of some units of one layer: columns of its input and recurrent matrices."""

    input: np.ndarray  # (D, 3w) kernel columns, or (V, 3w) table columns when by_id
    input_bias: np.ndarray  # (3w,); zeros when by_id (the table has b_i folded in)
    recurrent: np.ndarray  # (u, 3w): reads the whole previous h
    recurrent_bias: np.ndarray  # (3w,)
    units: slice
    by_id: bool


class NumpyGRULayer(NumpyLayer):
    """One GRU layer's step in numpy for R rows (chargen.net.cell.NumpyLayer).

    The first layer folds embedding @ kernel + b_i into one table, so a row per id replaces the
    input matmul. A GRU cannot stack [x, h] @ [W; U] into one product as the LSTM does, because
    r scales only the recurrent h block: it does two products per layer.
    """

    def __init__(self, kernel: np.ndarray, recurrent_kernel: np.ndarray, bias: np.ndarray,
                 embedding: np.ndarray | None = None):
        self.units = recurrent_kernel.shape[0]
        if bias.shape != (2, 3 * self.units) or recurrent_kernel.shape != (self.units, 3 * self.units):
            raise ValueError(f"GRU weights must be recurrent_kernel (u, 3u) and bias (2, 3u) (reset_after=True); "
                             f"got {recurrent_kernel.shape} and {bias.shape}")
        self.by_id = embedding is not None
        f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
        if self.by_id:
            self.input = f32(embedding.astype(np.float64) @ kernel + bias[0])
            self.input_bias = np.zeros(3 * self.units, np.float32)
        else:
            self.input, self.input_bias = f32(kernel), f32(bias[0])
        self.recurrent_kernel, self.recurrent_bias = f32(recurrent_kernel), f32(bias[1])

    def arrays(self) -> dict[str, np.ndarray]:
        first = {"input_table": self.input} if self.by_id else {"kernel": self.input, "input_bias": self.input_bias}
        return {**first, "recurrent_kernel": self.recurrent_kernel, "recurrent_bias": self.recurrent_bias}

    def parts(self, halves: bool) -> list[GRUPart]:
        u = self.units
        return [GRUPart(np.ascontiguousarray(self.input[:, cols]), self.input_bias[cols],
                        np.ascontiguousarray(self.recurrent_kernel[:, cols]), self.recurrent_bias[cols],
                        slice(lo, hi), self.by_id)
                for lo, hi in halves_of(u, halves) for cols in [unit_columns(u, lo, hi, (0, 1, 2))]]

    @staticmethod
    def step_part(inp: np.ndarray, state: tuple[np.ndarray, ...], part: GRUPart) -> tuple[np.ndarray]:
        """(h,) of the part's units from the layer input (or ids) and the whole previous h.

        Pure: nothing given is modified. float32 throughout, with few numpy calls (at batch 1 the
        per-call overhead is a large share of the step).
        """
        (h,) = state
        w = part.units.stop - part.units.start
        xp = part.input[inp] if part.by_id else inp @ part.input + part.input_bias  # a new array either way
        m = h @ part.recurrent
        m += part.recurrent_bias
        zr = xp[:, :2 * w]  # z, r: sigmoid(x) = (tanh(x / 2) + 1) / 2, in place
        zr += m[:, :2 * w]
        zr *= 0.5
        np.tanh(zr, out=zr)
        zr += 1.0
        zr *= 0.5
        hh = m[:, 2 * w:]
        hh *= zr[:, w:]
        hh += xp[:, 2 * w:]
        np.tanh(hh, out=hh)
        out = h[:, part.units] - hh  # z h + (1 - z) hh = hh + z (h - hh)
        out *= zr[:, :w]
        out += hh
        return (out,)


# ---------------------------------------------------------------- the cell

class GRU(Cell):
    name = "gru"
    state = ("h",)
    gates = 3
    keras_cell = "gru_cell"
    js_step = "gru"

    def weight_shapes(self, input_dim: int, units: int) -> dict[str, tuple[int, ...]]:
        return {"kernel": (input_dim, 3 * units), "recurrent_kernel": (units, 3 * units), "bias": (2, 3 * units)}

    def initializers(self, units: int) -> dict[str, Any]:
        return {"kernel": "glorot_uniform", "recurrent_kernel": "orthogonal", "bias": "zeros"}

    def split_bias(self, bias):
        return bias[0], bias[1]

    def maths(self):
        return _maths()

    def keras_layer(self, units: int, name: str):
        import keras

        return keras.layers.GRU(units, reset_after=True, return_sequences=True, stateful=True, name=name)

    def numpy_layer(self, kernel, recurrent_kernel, bias, embedding=None) -> NumpyGRULayer:
        return NumpyGRULayer(kernel, recurrent_kernel, bias, embedding)

    def tf_step(self, arrays: Mapping[str, Any], inp, state: Sequence[Any]) -> tuple:
        import tensorflow as tf

        (h,) = state
        if "input_table" in arrays:
            xp = tf.gather(arrays["input_table"], inp)
        else:
            xp = tf.matmul(inp, arrays["kernel"]) + arrays["input_bias"]
        m = tf.matmul(h, arrays["recurrent_kernel"]) + arrays["recurrent_bias"]
        return (_gates(xp, m, h)[0],)


CELL = GRU()
