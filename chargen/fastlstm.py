"""FastLSTM: a stateful LSTM layer with a hand-written backward pass, for training on a CPU.

It is a drop-in for `keras.layers.LSTM(units, return_sequences=True, stateful=True)` in this
package: the same three weights (`kernel`, `recurrent_kernel`, `bias`, at the same paths, in
the same order, with the same initializers), the same gate order (i, f, c, o) and activations,
and the same state semantics (one (h, c) per batch row in non-trainable variables, carried
from call to call, zeroed by reset_state()). Weights copy both ways with get/set_weights().

Why it is faster than the stock layer on a CPU (Keras runs the LSTM cell inside a while loop
and lets autodiff differentiate the loop step by step):
- The input projection x @ kernel + bias does not depend on the recurrence, so it is done for
  the whole window in one big matmul; only h @ recurrent_kernel stays inside the loop.
  Autodiff of that one matmul also gives d(kernel), d(bias) and d(inputs) as big matmuls.
- The recurrence has a hand-written gradient (tf.custom_gradient). The forward loop keeps,
  per step, the few local derivatives the backward needs; the backward loop then does only
  one small matmul per step (dz_t @ U^T) plus a handful of element-wise ops, and
  d(recurrent_kernel) is computed after the loop as ONE matmul over all steps:
  concat_t(h_{t-1})^T @ concat_t(dz_t). Autodiff instead does a thin (u x B) @ (B x 4u)
  matmul per step and accumulates T of them, besides differentiating every gate op.
- Both time loops are XLA-compiled on their own (jit=True, the default), even when the train
  step is not: XLA fuses each step's element-wise ops into one kernel and its small matmuls
  ran faster than TensorFlow's here. The rest of the step stays on TensorFlow's kernels, which
  beat XLA's for the big matmuls, softmax and Adam (see benchmarks/train_speed.py).

precision="bf16" (mixed precision, `--precision bf16`): every matrix product takes bfloat16
operands (the weights are cast per call; the variables, the state, the gates, the saved
derivatives and the gradients handed to the optimizer stay float32). TensorFlow's own bf16
matmul (oneDNN) runs ~2x its fp32 one on a CPU with AVX512_BF16, but XLA:CPU converts bf16 dots
to fp32 and gains nothing (measured: benchmarks/train_speed.py, docs/performance.md). So in
bf16 the time loops run as plain TensorFlow loops whose per-step product is TensorFlow's bf16
matmul (`jit` applies to fp32 only). Calling an XLA-fused function for each step's element-wise
ops from such a loop was tried and was slower than plain TensorFlow ops (each call hands the
step to XLA's threads and back; figures in docs/performance.md).

The TensorFlow backend is required (it is the only backend this package uses).
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

try:  # the stock RNN layer creates its state variables the same way, to keep them out of weights
    from keras.src.utils.tracking import no_automatic_dependency_tracking as _untracked
except ImportError:  # pragma: no cover - older/newer Keras layouts
    def _untracked(fn):
        return fn


def _unit_forget_bias(units: int):
    """Keras's LSTMCell bias initializer with unit_forget_bias=True: (0, 1, 0, 0) per gate block."""
    def init(shape, dtype=None):
        return tf.concat([tf.zeros((units,), dtype), tf.ones((units,), dtype), tf.zeros((2 * units,), dtype)], 0)
    return init


def _cell(z, c):
    """One LSTM step from the pre-activations z = x W + b + h U and the previous c.

    Returns the new (h, c) and what the backward pass needs of this step: the step-local
    derivatives, computed here while the gate values are at hand (with XLA they fuse into the
    step for free; as a separate pass over the whole window they cost a third of the backward):
      dc_from_h = o * (1 - tanh(c)^2)          dc_t += dh_t * dc_from_h
      local     = [g i(1-i), c_prev f(1-f), i(1-g^2), tanh(c) o(1-o)]
                                               dz_t = [dc_t, dc_t, dc_t, dh_t] * local
      f                                        dc_{t-1} = dc_t * f
    Gate order (i, f, c, o), sigmoid for i, f, o and tanh for the candidate: as keras LSTMCell.
    """
    zi, zf, zg, zo = tf.split(z, 4, axis=1)
    i, f, g, o = tf.sigmoid(zi), tf.sigmoid(zf), tf.tanh(zg), tf.sigmoid(zo)
    c_new = f * c + i * g
    tc = tf.tanh(c_new)
    h = o * tc
    local = tf.concat([g * i * (1.0 - i), c * f * (1.0 - f), i * (1.0 - g * g), tc * o * (1.0 - o)], axis=1)
    return h, c_new, (o * (1.0 - tc * tc), local, f)


def _forward(xp, h0, c0, rec, bf16: bool = False):
    """The recurrence over the window, keeping what the backward pass needs of every step.

    A tf.while_loop rather than a Python-unrolled loop: unrolling 128 steps into the graph was
    no faster here (the executor's cost per op is the same) and took 50 s to XLA-compile.
    `bf16`: the per-step product h @ U with bfloat16 operands (its result cast back to float32).
    """
    n = tf.shape(xp)[0]
    xs = tf.TensorArray(xp.dtype, size=n).unstack(xp)
    rec_low = tf.cast(rec, tf.bfloat16) if bf16 else rec  # cast once per window, not per step

    def body(t, h, c, hs, *saved):
        z_rec = tf.cast(tf.matmul(tf.cast(h, tf.bfloat16), rec_low), tf.float32) if bf16 else tf.matmul(h, rec)
        h, c, keep = _cell(xs.read(t) + z_rec, c)
        return (t + 1, h, c, hs.write(t, h), *(ta.write(t, v) for ta, v in zip(saved, keep)))

    out = tf.while_loop(lambda t, *_: t < n, body,
                        (0, h0, c0, *(tf.TensorArray(xp.dtype, size=n) for _ in range(4))), maximum_iterations=n)
    c_last = out[2]
    hs, dc_from_h, local, f = (ta.stack() for ta in out[3:])
    units = rec.shape[0]
    for v, width in ((hs, units), (dc_from_h, units), (local, 4 * units), (f, units)):
        v.set_shape(xp.shape[:2].concatenate([width]))
    return hs, c_last, dc_from_h, local, f


def _backward(d_hs, d_c_last, h0, hs, dc_from_h, local, f, rec, bf16: bool = False):
    """Gradients of (xp, h0, c0, rec) given dL/dh_t for every step and dL/dc_T (bf16: as _forward)."""
    units = rec.shape[0]
    low = tf.bfloat16 if bf16 else rec.dtype  # the products' operand type (casts to float32 are no-ops in fp32)
    # U^T is materialised once: matmul(..., transpose_b=True) ran 1.5-3x slower per step than
    # a plain matmul with a transposed copy (TF's CPU matmul on 2 cores, measured here).
    rec_t = tf.cast(tf.transpose(rec), low)
    n = tf.shape(d_hs)[0]
    tas = [tf.TensorArray(d_hs.dtype, size=n).unstack(v) for v in (d_hs, dc_from_h, local, f)]

    def back(t, dh_rec, dc, dzs):
        # The only matmul per step is dz_t @ U^T; d(U) is not accumulated here (see below).
        dh = tas[0].read(t) + dh_rec
        dc = dc + dh * tas[1].read(t)
        dz = tf.concat([dc, dc, dc, dh], axis=1) * tas[2].read(t)
        dh_rec = tf.cast(tf.matmul(tf.cast(dz, low), rec_t), tf.float32)
        return t - 1, dh_rec, dc * tas[3].read(t), dzs.write(t, dz)

    _, dh0, dc0, dzs = tf.while_loop(lambda t, *_: t >= 0, back,
                                     (n - 1, tf.zeros_like(h0), d_c_last, tf.TensorArray(d_hs.dtype, size=n)),
                                     maximum_iterations=n)
    dz_all = dzs.stack()
    dz_all.set_shape(local.shape)
    # d(recurrent_kernel) as ONE matmul over all steps: sum_t h_{t-1}^T dz_t.
    h_prev = tf.concat([h0[None], hs[:-1]], axis=0)
    d_rec = tf.matmul(tf.cast(tf.reshape(h_prev, (-1, units)), low), tf.cast(tf.reshape(dz_all, (-1, 4 * units)), low),
                      transpose_a=True)
    d_rec = tf.cast(d_rec, tf.float32)
    # dz_t is exactly dL/d(xp_t): the input projection's gradients follow by autodiff outside.
    return dz_all, dh0, dc0, d_rec


# XLA fuses each step's element-wise ops into one kernel, and its small per-step matmuls ran
# faster than TensorFlow's here: the whole train step got 1.4x faster at 2x512 units and 1.2x
# at 2x256 (2 CPU cores) with these two functions compiled. A jit_compile function nested in a
# plain tf.function is compiled on its own; in a jit-compiled train step it is simply inlined.
_KERNELS = {(jit, "fp32"): (tf.function(_forward, jit_compile=jit, autograph=False),
                             tf.function(_backward, jit_compile=jit, autograph=False)) for jit in (False, True)}
# In bf16 the loops stay plain TensorFlow whatever `jit` says: its bf16 matmul is the fast one.
_KERNELS.update({(jit, "bf16"): (tf.function(functools.partial(_forward, bf16=True), autograph=False),
                                 tf.function(functools.partial(_backward, bf16=True), autograph=False))
                 for jit in (False, True)})
PRECISIONS = ("fp32", "bf16")


def _recurrence(xp, h0, c0, rec, jit: bool = True, precision: str = "fp32"):
    """The LSTM recurrence over a time-major window, with a hand-written gradient.

    xp: (T, B, 4u) input projections (x W + b); h0, c0: (B, u); rec: (u, 4u), all float32.
    Returns hs (T, B, u) and the final c (B, u); the final h is hs[-1]. precision="bf16" does
    the per-step products in bfloat16 (see the module docstring).
    """
    forward, backward = _KERNELS[(bool(jit), precision)]

    @tf.custom_gradient
    def run(xp, h0, c0, rec):
        # stop_gradient: nothing may differentiate through the loop itself (the gradient is
        # `grad` below), so TF must not record it; in eager mode it otherwise builds a
        # differentiable variant of the loop, which XLA refuses.
        hs, c_last, *saved = forward(*(tf.stop_gradient(v) for v in (xp, h0, c0, rec)))

        def grad(d_hs, d_c_last):
            # d_hs: dL/dh_t for every output step (return_sequences); d_c_last: dL/dc_T (the final
            # state only goes to a variable, so it is normally zero or None, but handle it).
            d_hs = tf.zeros_like(hs) if d_hs is None else d_hs
            d_c_last = tf.zeros_like(c0) if d_c_last is None else d_c_last
            return backward(d_hs, d_c_last, h0, hs, *saved, rec)

        return (hs, c_last), grad

    return run(xp, h0, c0, rec)


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


class FastLSTM(keras.layers.Layer):
    """Stateful LSTM (return_sequences=True) for a fixed batch size, with Keras LSTM's weights.

    `jit=True` (default) XLA-compiles the forward and backward time loops (each distinct
    sequence length compiles once); `jit=False` runs them as plain TensorFlow graphs.
    `precision="bf16"`: the matrix products in bfloat16, everything else float32 (module docstring).
    """

    stateful = True  # what chargen.model.lstm_layers() looks for

    def __init__(self, units: int, jit: bool = True, precision: str = "fp32", **kwargs):
        super().__init__(**kwargs)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.units = int(units)
        self.jit = bool(jit)
        self.precision = precision
        self.states = None
        self._batch_size = None

    def build(self, input_shape):
        batch, _, dim = input_shape
        if batch is None:
            raise ValueError(f"{self.name}: a stateful FastLSTM needs a static batch size; "
                             f"got input shape {tuple(input_shape)} (use keras.Input(batch_shape=...))")
        u = self.units
        # The weights live in a sublayer named "lstm_cell", built here inside this layer's name
        # scope, so their paths are the stock layer's ("lstm_0/lstm_cell/kernel", ...), created
        # in the same order: kernel, recurrent_kernel, bias.
        self.cell = _LSTMWeights(u, name="lstm_cell")
        self.cell.build((batch, dim))
        self._batch_size = int(batch)
        self._create_state_variables(int(batch))
        self.built = True

    @_untracked
    def _create_state_variables(self, batch):
        # Not tracked: like the stock layer's, the state is not a weight, so get_weights()
        # stays the same for models of different batch sizes.
        self.states = [keras.Variable(tf.zeros((batch, self.units)), trainable=False, dtype="float32",
                                      name=name) for name in ("rnn_state_h", "rnn_state_c")]

    def reset_state(self):
        if self.states is not None:
            for v in self.states:
                v.assign(tf.zeros_like(v.value))

    def reset_states(self):  # the stock layer's alias
        self.reset_state()

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.units)

    def call(self, inputs, training=None):
        batch, steps, dim = inputs.shape
        if batch != self._batch_size:
            raise ValueError(f"{self.name}: this stateful layer was built for batch size {self._batch_size} "
                             f"(its state has one row per batch row) but was called with batch size {batch}; "
                             "build a model for that batch size and copy the weights")
        u = self.units
        x = tf.transpose(tf.convert_to_tensor(inputs, self.compute_dtype), (1, 0, 2))  # time-major (T, B, D)
        # The input projection of the whole window in one matmul (autodiff gives dW, db, dx; in
        # bf16 through the casts, so the variables' gradients arrive as float32).
        x2d, kernel = tf.reshape(x, (-1, dim)), tf.convert_to_tensor(self.cell.kernel)
        if self.precision == "bf16":
            proj = tf.cast(tf.matmul(tf.cast(x2d, tf.bfloat16), tf.cast(kernel, tf.bfloat16)), tf.float32)
        else:
            proj = tf.matmul(x2d, kernel)
        xp = tf.reshape(proj + self.cell.bias, tf.concat([tf.shape(x)[:2], [4 * u]], 0))
        xp.set_shape((steps, batch, 4 * u))
        h0, c0 = (tf.convert_to_tensor(v) for v in self.states)
        hs, c_last = _recurrence(xp, h0, c0, tf.convert_to_tensor(self.cell.recurrent_kernel), self.jit, self.precision)
        # Carry the final state to the next call (truncated BPTT: no gradient across calls).
        self.states[0].assign(hs[-1])
        self.states[1].assign(c_last)
        return tf.transpose(hs, (1, 0, 2))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "jit": self.jit, "precision": self.precision}

