"""FastLSTM: a stateful LSTM layer with a hand-written backward pass, for training on a CPU.

It is a drop-in for `keras.layers.LSTM(units, return_sequences=True, stateful=True)` in this
package: the same three weights (`kernel`, `recurrent_kernel`, `bias`, at the same paths, in
the same order, with the same initializers), the same gate order (i, f, c, o) and activations,
and the same state semantics (one (h, c) per batch row in non-trainable variables, carried
from call to call, zeroed by reset_state()). Weights copy both ways with get/set_weights().

This module holds the LSTM's maths for one step, forward and backward; the time loops, their
XLA compilation, the custom gradient and the stateful layer are chargen.recurrence's, shared
with the GRU (chargen/gru.py); its docstring says why that is faster than the stock layer.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from chargen.recurrence import CellMaths, Recurrence, StatefulRecurrent


def _unit_forget_bias(units: int):
    """Keras's LSTMCell bias initializer with unit_forget_bias=True: (0, 1, 0, 0) per gate block."""
    def init(shape, dtype=None):
        return tf.concat([tf.zeros((units,), dtype), tf.ones((units,), dtype), tf.zeros((2 * units,), dtype)], 0)
    return init


def _step(xp, m, h, carries):
    """One LSTM step from the pre-activations z = x W + b + h U and the previous c.

    Returns the new h and (c,) and what the backward pass needs of this step: the step-local
    derivatives, computed here while the gate values are at hand (with XLA they fuse into the
    step for free; as a separate pass over the whole window they cost a third of the backward):
      dc_from_h = o * (1 - tanh(c)^2)          dc_t += dh_t * dc_from_h
      local     = [g i(1-i), c_prev f(1-f), i(1-g^2), tanh(c) o(1-o)]
                                               dz_t = [dc_t, dc_t, dc_t, dh_t] * local
      f                                        dc_{t-1} = dc_t * f
    Gate order (i, f, c, o), sigmoid for i, f, o and tanh for the candidate: as keras LSTMCell.
    """
    (c,) = carries
    zi, zf, zg, zo = tf.split(xp + m, 4, axis=1)
    i, f, g, o = tf.sigmoid(zi), tf.sigmoid(zf), tf.tanh(zg), tf.sigmoid(zo)
    c_new = f * c + i * g
    tc = tf.tanh(c_new)
    h = o * tc
    local = tf.concat([g * i * (1.0 - i), c * f * (1.0 - f), i * (1.0 - g * g), tc * o * (1.0 - o)], axis=1)
    return h, (c_new,), (o * (1.0 - tc * tc), local, f)


def _back(dh, d_carries, saved):
    """One step back: dz_t (which is both dL/d(x W + b)_t and dL/d(h U)_t) and dL/dc_{t-1}."""
    (dc,), (dc_from_h, local, f) = d_carries, saved
    dc = dc + dh * dc_from_h
    dz = tf.concat([dc, dc, dc, dh], axis=1) * local
    return dz, dz, None, (dc * f,)


LSTM_MATHS = CellMaths("lstm", gates=4, carries=1, saved_widths=(1, 4, 1), step=_step, back=_back, dm_is_dxp=True)
_RECURRENCE = Recurrence(LSTM_MATHS)


def _recurrence(xp, h0, c0, rec, jit: bool = True, precision: str = "fp32"):
    """The LSTM recurrence over a time-major window, with a hand-written gradient.

    xp: (T, B, 4u) input projections (x W + b); h0, c0: (B, u); rec: (u, 4u), all float32.
    Returns hs (T, B, u) and the final c (B, u); the final h is hs[-1]. precision="bf16" does
    the per-step products in bfloat16 (chargen.recurrence's docstring).
    """
    hs, (c_last,) = _RECURRENCE(xp, h0, (c0,), rec, None, jit, precision)
    return hs, c_last


class _LSTMWeights(keras.layers.Layer):
    """Holds the three weights, with keras.layers.LSTMCell's shapes and initializers."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        u = self.units
        self.kernel = self.add_weight(shape=(input_shape[-1], 4 * u), initializer="glorot_uniform", name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(u, 4 * u), initializer="orthogonal", name="recurrent_kernel")
        self.bias = self.add_weight(shape=(4 * u,), initializer=_unit_forget_bias(u), name="bias")


class FastLSTM(StatefulRecurrent):
    """Stateful LSTM (return_sequences=True) for a fixed batch size, with Keras LSTM's weights.

    `jit=True` (default) XLA-compiles the forward and backward time loops (each distinct
    sequence length compiles once); `jit=False` runs them as plain TensorFlow graphs.
    """

    cell_name = "lstm_cell"
    state_names = ("rnn_state_h", "rnn_state_c")
    recurrence = _RECURRENCE

    def _make_weights(self, units: int, name: str) -> keras.layers.Layer:
        return _LSTMWeights(units, name=name)

    def _biases(self):
        return self.cell.bias, None

    def reset_states(self):  # the stock layer's alias
        self.reset_state()
