"""The GRU cell: its weight layout, a fast CPU training layer, a numpy step and a TensorFlow step.

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
embedding @ W + b_i, as chargen.sampling.NumpyLSTM folds it for the LSTM.

Backward (for FastGRU's hand-written gradient), with dh = dL/dh_t in full:
    d(xp_z) = d(m_z) = dh (h_{t-1} - hh) z (1 - z)
    d(xp_h)          = dh (1 - z) (1 - hh^2)         d(m_h) = d(xp_h) r
    d(xp_r) = d(m_r) = d(xp_h) m_h r (1 - r)
    dL/dh_{t-1}      = dh z + d(m) U^T
so unlike the LSTM's, the input and recurrent pre-activation gradients differ (in the h block);
d(U) = sum_t h_{t-1}^T d(m_t) and d(b_r) = sum_t d(m_t) are computed once after the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import keras
import numpy as np
import tensorflow as tf

from chargen.recurrence import CellMaths, Recurrence, StatefulRecurrent

GATES = ("z", "r", "h")  # Keras GRUCell's gate blocks, in column order


def weight_shapes(input_dim: int, units: int) -> dict[str, tuple[int, ...]]:
    """The layer's weights, in get_weights() order, as keras.layers.GRU(reset_after=True) has them."""
    return {"kernel": (input_dim, 3 * units), "recurrent_kernel": (units, 3 * units), "bias": (2, 3 * units)}


def keras_gru(units: int, name: str):
    """The stock layer these pieces are compatible with (stateful, every step's output)."""
    return keras.layers.GRU(units, reset_after=True, return_sequences=True, stateful=True, name=name)


# ---------------------------------------------------------------- TensorFlow: training and export

def _gates(xp, m, h):
    """One GRU step from xp = x W + b_i and m = h U + b_r: the new h and the gate values."""
    xz, xr, xh = tf.split(xp, 3, axis=1)
    mz, mr, mh = tf.split(m, 3, axis=1)
    z, r = tf.sigmoid(xz + mz), tf.sigmoid(xr + mr)
    hh = tf.tanh(xh + r * mh)
    return z * h + (1.0 - z) * hh, z, r, hh, mh


def _step(xp, m, h, carries):
    """The step and what the backward needs of it (module docstring), while the gates are at hand."""
    h_new, z, r, hh, mh = _gates(xp, m, h)
    local = tf.concat([(h - hh) * z * (1.0 - z), (1.0 - z) * (1.0 - hh * hh), mh * r * (1.0 - r)], axis=1)
    return h_new, (), (local, r, z)


def _back(dh, d_carries, saved):
    local, r, z = saved
    for_z, for_h, for_r = tf.split(local, 3, axis=1)
    d_z, d_h = dh * for_z, dh * for_h
    d_r = d_h * for_r
    return tf.concat([d_z, d_r, d_h], axis=1), tf.concat([d_z, d_r, d_h * r], axis=1), dh * z, ()


GRU_MATHS = CellMaths("gru", gates=3, carries=0, saved_widths=(3, 1, 1), step=_step, back=_back)
_RECURRENCE = Recurrence(GRU_MATHS)


def recurrence(xp, h0, rec, rec_bias, jit: bool = True):
    """The GRU recurrence over a time-major window with its hand-written gradient.

    xp: (T, B, 3u) input projections (x W + b_i); h0: (B, u); rec: (u, 3u); rec_bias: (3u,).
    Returns hs (T, B, u); the final state is hs[-1].
    """
    return _RECURRENCE(xp, h0, (), rec, rec_bias, jit)[0]


class _GRUWeights(keras.layers.Layer):
    """Holds the three weights, with keras.layers.GRUCell(reset_after=True)'s shapes and initializers."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        shapes = weight_shapes(input_shape[-1], self.units)
        self.kernel = self.add_weight(shape=shapes["kernel"], initializer="glorot_uniform", name="kernel")
        self.recurrent_kernel = self.add_weight(shape=shapes["recurrent_kernel"], initializer="orthogonal",
                                                name="recurrent_kernel")
        self.bias = self.add_weight(shape=shapes["bias"], initializer="zeros", name="bias")


class FastGRU(StatefulRecurrent):
    """Stateful GRU (return_sequences=True) for a fixed batch size, with keras.layers.GRU's weights.

    A drop-in for `keras_gru(units, name)`: weights at the same paths ("gru_0/gru_cell/kernel"),
    same initializers, the state h in a non-trainable variable outside get_weights(). `jit=True`
    (default) XLA-compiles the forward and backward time loops; `jit=False` runs plain graphs.
    """

    cell_name = "gru_cell"
    state_names = ("rnn_state",)
    recurrence = _RECURRENCE

    def _make_weights(self, units: int, name: str) -> keras.layers.Layer:
        return _GRUWeights(units, name=name)

    def _biases(self):
        return self.cell.bias[0], self.cell.bias[1]


def tf_layer_step(arrays: Mapping[str, tf.Tensor], inp, h):
    """One GRU step in TensorFlow (the exported step graph), from NumpyGRULayer.arrays() as tensors.

    inp is the layer input x (R, D), or for a layer with an "input_table" the ids (R,) int32;
    h is (R, u). Returns the new h (R, u).
    """
    if "input_table" in arrays:
        xp = tf.gather(arrays["input_table"], inp)
    else:
        xp = tf.matmul(inp, arrays["kernel"]) + arrays["input_bias"]
    m = tf.matmul(h, arrays["recurrent_kernel"]) + arrays["recurrent_bias"]
    return _gates(xp, m, h)[0]


# ---------------------------------------------------------------- numpy: generation

def unit_columns(units: int, lo: int, hi: int, blocks: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    """Columns of a gate-block matrix (blocks of `units` columns) for units [lo, hi), blocks in the given order.

    The generic form of chargen.sampling's LSTM-only _gate_columns (which is blocks (0, 1, 3, 2)):
    a cut of a layer into parts of its units, each part with all its gates. The GRU keeps Keras's
    order (z, r, h): its two sigmoid gates are already one contiguous slice.
    """
    return np.concatenate([np.arange(b * units + lo, b * units + hi) for b in blocks])


@dataclass(frozen=True)
class GRUPart:
    """All three gates of units `units` of one layer: columns of its input and recurrent matrices."""

    input: np.ndarray  # (D, 3w) kernel columns, or (V, 3w) table columns when by_id
    input_bias: np.ndarray  # (3w,); zeros when by_id (the table has b_i folded in)
    recurrent: np.ndarray  # (u, 3w): reads the whole previous h
    recurrent_bias: np.ndarray  # (3w,)
    units: slice
    by_id: bool


def step_part(inp: np.ndarray, h: np.ndarray, part: GRUPart) -> np.ndarray:
    """The new h of the units of `part` for R rows, from the layer input (or ids) and the whole previous h.

    Pure: neither argument is modified. float32 throughout, with few numpy calls (at batch 1 the
    per-call overhead is a large share of the step).
    """
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
    return out


class NumpyGRULayer:
    """One GRU layer's step in numpy for R rows, from Keras's arrays; with `embedding`, fed ids.

    With an embedding (the first layer), embedding @ kernel + b_i folds into one table, so a row
    per id replaces the input matmul, as NumpyLSTM does.
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
        self._parts = {halves: self.parts(halves) for halves in (False, True)}

    @classmethod
    def from_keras(cls, layer, embedding: np.ndarray | None = None) -> "NumpyGRULayer":
        """From a built keras.layers.GRU(reset_after=True) or FastGRU."""
        cell = layer.cell
        return cls(*(np.asarray(v.numpy()) for v in (cell.kernel, cell.recurrent_kernel, cell.bias)), embedding)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays the step uses, by name, for tf_layer_step (the exporter makes them variables)."""
        first = {"input_table": self.input} if self.by_id else {"kernel": self.input, "input_bias": self.input_bias}
        return {**first, "recurrent_kernel": self.recurrent_kernel, "recurrent_bias": self.recurrent_bias}

    def parts(self, halves: bool) -> list[GRUPart]:
        """The layer whole, or cut into two halves of its units, each part with all three gates."""
        u = self.units
        cuts = [0, u // 2, u] if halves and u >= 2 else [0, u]
        return [GRUPart(np.ascontiguousarray(self.input[:, cols]), self.input_bias[cols],
                        np.ascontiguousarray(self.recurrent_kernel[:, cols]), self.recurrent_bias[cols],
                        slice(lo, hi), self.by_id)
                for lo, hi in zip(cuts, cuts[1:]) for cols in [unit_columns(u, lo, hi)]]

    def step(self, inp: np.ndarray, h: np.ndarray, halves: bool = False) -> np.ndarray:
        """The new h (R, u) from the input x (R, D) or ids (R,) and the previous h (R, u); pure."""
        parts = self._parts[halves]
        if len(parts) == 1:
            return step_part(inp, h, parts[0])
        return np.concatenate([step_part(inp, h, p) for p in parts], axis=1)
