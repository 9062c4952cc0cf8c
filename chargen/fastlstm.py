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
- The recurrence has a hand-written gradient (tf.custom_gradient). The forward loop keeps the
  gate activations; the backward loop then does only one small matmul per step (dz_t @ U^T)
  plus a few element-wise ops, and d(recurrent_kernel) is computed after the loop as ONE
  matmul over all steps: concat_t(h_{t-1})^T @ concat_t(dz_t). Autodiff instead does a
  (units x T*B) outer-product matmul per step and accumulates 128 of them.
- Everything element-wise that does not depend on the backward recurrence (the gate
  derivatives, tanh(c)) is computed once for the whole window before the backward loop, as
  a few large ops instead of hundreds of tiny ones.

The TensorFlow backend is required (it is the only backend this package uses).
"""

from __future__ import annotations

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


def _cell(z, c, units):
    """One LSTM step from the pre-activations z = x W + b + h U: new (h, c) and the 4 gate activations."""
    zi, zf, zg, zo = tf.split(z, 4, axis=1)
    i, f, g, o = tf.sigmoid(zi), tf.sigmoid(zf), tf.tanh(zg), tf.sigmoid(zo)
    c = f * c + i * g
    h = o * tf.tanh(c)
    return h, c, tf.concat([i, f, g, o], axis=1)


def _recurrence(xp, h0, c0, rec, unroll: bool):
    """The LSTM recurrence over a time-major window, with a hand-written gradient.

    xp: (T, B, 4u) input projections (x W + b); h0, c0: (B, u); rec: (u, 4u).
    Returns hs (T, B, u) and the final c (B, u); the final h is hs[-1].
    """
    units = rec.shape[0]

    @tf.custom_gradient
    def run(xp, h0, c0, rec):
        # ---- forward: keep h_t, c_t and the gate activations of every step
        if unroll:
            # A Python loop writes T steps into the graph: no while-loop overhead per step.
            h, c, hs, cs, acts = h0, c0, [], [], []
            for x_t in tf.unstack(xp):
                h, c, a = _cell(x_t + tf.matmul(h, rec), c, units)
                hs.append(h), cs.append(c), acts.append(a)
            hs, cs, acts = tf.stack(hs), tf.stack(cs), tf.stack(acts)
        else:
            # A while loop works for any (also unknown) T and keeps the graph small.
            n = tf.shape(xp)[0]
            xs = tf.TensorArray(xp.dtype, size=n).unstack(xp)
            ta = [tf.TensorArray(xp.dtype, size=n) for _ in range(3)]

            def body(t, h, c, hs, cs, acts):
                h, c, a = _cell(xs.read(t) + tf.matmul(h, rec), c, units)
                return t + 1, h, c, hs.write(t, h), cs.write(t, c), acts.write(t, a)

            _, _, _, hs, cs, acts = tf.while_loop(lambda t, *_: t < n, body, (tf.constant(0), h0, c0, *ta))
            hs, cs, acts = hs.stack(), cs.stack(), acts.stack()
            hs.set_shape(xp.shape[:2].concatenate([units])), cs.set_shape(hs.shape)
            acts.set_shape(xp.shape)

        def grad(d_hs, d_c_last):
            # d_hs: dL/dh_t for every output step (return_sequences); d_c_last: dL/dc_T (the
            # final state goes to a variable, so this is normally zero, but handle it).
            if d_c_last is None:
                d_c_last = tf.zeros_like(c0)
            if d_hs is None:
                d_hs = tf.zeros_like(hs)
            # Step-independent factors for the whole window at once (few big ops).
            c_prev = tf.concat([c0[None], cs[:-1]], axis=0)
            i, f, g, o = tf.split(acts, 4, axis=2)
            tc = tf.tanh(cs)
            dc_from_h = o * (1.0 - tc * tc)                  # dc_t += dh_t * this
            # dz_t = concat(dc_t, dc_t, dc_t, dh_t) * local, gates in Keras order (i, f, g, o)
            local = tf.concat([g * i * (1.0 - i), c_prev * f * (1.0 - f), i * (1.0 - g * g),
                               tc * o * (1.0 - o)], axis=2)
            # Backward recurrence: 4 element-wise ops, 1 concat and one (B,4u)@(4u,u) per step.
            if unroll:
                steps = xp.shape[0]
                dh_rec, dc, dzs = tf.zeros_like(h0), d_c_last, [None] * steps
                for t in reversed(range(steps)):
                    dh = d_hs[t] + dh_rec
                    dc = dc + dh * dc_from_h[t]
                    dz = tf.concat([dc, dc, dc, dh], axis=1) * local[t]
                    dzs[t] = dz
                    dc = dc * f[t]
                    dh_rec = tf.matmul(dz, rec, transpose_b=True)
                dz_all = tf.stack(dzs)
            else:
                n = tf.shape(xp)[0]
                tas = [tf.TensorArray(xp.dtype, size=n).unstack(v) for v in (d_hs, dc_from_h, local, f)]

                def back(t, dh_rec, dc, dzs):
                    dh = tas[0].read(t) + dh_rec
                    dc = dc + dh * tas[1].read(t)
                    dz = tf.concat([dc, dc, dc, dh], axis=1) * tas[2].read(t)
                    return (t - 1, tf.matmul(dz, rec, transpose_b=True), dc * tas[3].read(t), dzs.write(t, dz))

                _, dh_rec, dc, dz_all = tf.while_loop(
                    lambda t, *_: t >= 0, back, (n - 1, tf.zeros_like(h0), d_c_last, tf.TensorArray(xp.dtype, size=n)))
                dz_all = dz_all.stack()
                dz_all.set_shape(xp.shape)
            # d(recurrent_kernel) as ONE matmul over all steps: sum_t h_{t-1}^T dz_t.
            h_prev = tf.concat([h0[None], hs[:-1]], axis=0)
            d_rec = tf.matmul(tf.reshape(h_prev, (-1, units)), tf.reshape(dz_all, (-1, 4 * units)), transpose_a=True)
            # Gradients for (xp, h0, c0, rec): dz_t is exactly dL/d(xp_t).
            return dz_all, dh_rec, dc, d_rec

        return (hs, cs[-1]), grad

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

    `unroll=None` unrolls the time loop into the graph when the window length is static and at
    most `max_unroll` steps, else uses a tf.while_loop (any length, also unknown).
    """

    stateful = True  # what chargen.model.lstm_layers() looks for

    def __init__(self, units: int, unroll: bool | None = None, max_unroll: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.unroll = unroll
        self.max_unroll = int(max_unroll)
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
        # The input projection of the whole window in one matmul (autodiff gives dW, db, dx).
        xp = tf.reshape(tf.matmul(tf.reshape(x, (-1, dim)), self.cell.kernel) + self.cell.bias,
                        tf.concat([tf.shape(x)[:2], [4 * u]], 0))
        xp.set_shape((steps, batch, 4 * u))
        unroll = self.unroll
        if unroll is None:
            unroll = steps is not None and steps <= self.max_unroll
        if unroll and steps is None:
            raise ValueError(f"{self.name}: unroll=True needs a static sequence length")
        h0, c0 = (tf.convert_to_tensor(v) for v in self.states)
        hs, c_last = _recurrence(xp, h0, c0, tf.convert_to_tensor(self.cell.recurrent_kernel), bool(unroll))
        # Carry the final state to the next call (truncated BPTT: no gradient across calls).
        self.states[0].assign(hs[-1])
        self.states[1].assign(c_last)
        return tf.transpose(hs, (1, 0, 2))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "unroll": self.unroll, "max_unroll": self.max_unroll}

