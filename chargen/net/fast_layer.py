"""FastRecurrent: a stateful recurrent Keras layer for any registered cell, trained with chargen's fast loops.

It is a drop-in for the cell's stock layer (`keras.layers.LSTM/GRU(units, return_sequences=True,
stateful=True)` in this package): the same three weights at the same paths, in the same order,
with the same initializers (the cell's), and the same state semantics (one state per batch row in
non-trainable variables, carried from call to call, zeroed by reset_state()). Weights copy both
ways with get/set_weights(). The cell brings its maths and its weights (chargen/net/cell.py); the
time loops, their gradient and bf16 are chargen.net.recurrence's, whose docstring says why this is
faster than the stock layers on a CPU.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from chargen.net.recurrence import PRECISIONS, _product, recurrence_of

try:  # the stock RNN layer creates its state variables the same way, to keep them out of weights
    from keras.src.utils.tracking import no_automatic_dependency_tracking as _untracked
except ImportError:  # pragma: no cover - older/newer Keras layouts
    def _untracked(fn):
        return fn


class _CellWeights(keras.layers.Layer):
    """Holds a layer's three weights with the stock cell's names, shapes and initializers."""

    def __init__(self, cell, units: int, **kwargs):
        super().__init__(**kwargs)
        self.cell_spec, self.units = cell, units

    def build(self, input_shape):
        inits = self.cell_spec.initializers(self.units)
        for name, shape in self.cell_spec.weight_shapes(input_shape[-1], self.units).items():
            setattr(self, name, self.add_weight(shape=shape, initializer=inits[name], name=name))


class FastRecurrent(keras.layers.Layer):
    """A stateful recurrent layer (return_sequences=True) for a fixed batch size, stock-layer compatible.

    `cell` names a registered cell (chargen.net): it brings its maths and its weights; this layer
    brings the input projection, the loops and the state. The weights live in a sublayer named
    like the stock cell, so their paths are the stock layer's ("gru_0/gru_cell/kernel") and
    get/set_weights() copy both ways. The state (one (B, units) variable per `cell.state`) lives in
    non-trainable variables kept out of get_weights(), carried from call to call, zeroed by
    reset_state(). `jit=True` (default) XLA-compiles the time loops (each distinct sequence length
    compiles once); `jit=False` runs them as plain TensorFlow graphs. `precision="bf16"`: the
    matrix products in bfloat16, everything else float32 (chargen.net.recurrence's docstring).
    """

    stateful = True  # what chargen.net.model.recurrent_layers() looks for, as on the stock layers

    def __init__(self, cell: str, units: int, jit: bool = True, precision: str = "fp32", **kwargs):
        super().__init__(**kwargs)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        from chargen.net import get_cell

        self.cell_name = cell
        self.recurrence = recurrence_of(cell)
        self._spec = get_cell(cell)
        self.units = int(units)
        self.jit = bool(jit)
        self.precision = precision
        self.states = None
        self._batch_size = None

    def build(self, input_shape):
        batch, _, dim = input_shape
        if batch is None:
            raise ValueError(f"{self.name}: a stateful fast {self.cell_name} layer needs a static batch size; "
                             f"got input shape {tuple(input_shape)} (use keras.Input(batch_shape=...))")
        # Built here, inside this layer's name scope, so the paths are the stock layer's, in the same order.
        self.cell = _CellWeights(self._spec, self.units, name=self._spec.keras_cell)
        self.cell.build((batch, dim))
        self._batch_size = int(batch)
        self._create_state_variables(int(batch))
        self.built = True

    @_untracked
    def _create_state_variables(self, batch):
        # Not tracked: like the stock layer's, the state is not a weight, so get_weights()
        # stays the same for models of different batch sizes.
        self.states = [keras.Variable(tf.zeros((batch, self.units)), trainable=False, dtype="float32",
                                      name="rnn_state") for _ in self._spec.state]

    def reset_state(self):
        if self.states is not None:
            for v in self.states:
                v.assign(tf.zeros_like(v.value))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.units)

    def call(self, inputs, training=None):
        batch, steps, dim = inputs.shape
        if batch != self._batch_size:
            raise ValueError(f"{self.name}: this stateful layer was built for batch size {self._batch_size} "
                             f"(its state has one row per batch row) but was called with batch size {batch}; "
                             "build a model for that batch size and copy the weights")
        width = self.recurrence.cell.gates * self.units
        input_bias, rec_bias = self._spec.split_bias(self.cell.bias)
        x = tf.transpose(tf.convert_to_tensor(inputs, self.compute_dtype), (1, 0, 2))  # time-major (T, B, D)
        # The input projection of the whole window in one matmul (autodiff gives dW, db, dx; in
        # bf16 through the casts, so the variables' gradients arrive as float32).
        low = tf.bfloat16 if self.precision == "bf16" else tf.float32
        proj = _product(tf.reshape(x, (-1, dim)), tf.cast(tf.convert_to_tensor(self.cell.kernel), low), low)
        xp = tf.reshape(proj + input_bias, tf.concat([tf.shape(x)[:2], [width]], 0))
        xp.set_shape((steps, batch, width))
        h0, *carries0 = (tf.convert_to_tensor(v) for v in self.states)
        rec = tf.convert_to_tensor(self.cell.recurrent_kernel)
        hs, carries_last = self.recurrence(xp, h0, tuple(carries0), rec, rec_bias, self.jit, self.precision)
        # Carry the final state to the next call (truncated BPTT: no gradient across calls).
        for v, value in zip(self.states, (hs[-1], *carries_last)):
            v.assign(value)
        return tf.transpose(hs, (1, 0, 2))

    def get_config(self):
        return {**super().get_config(), "cell": self.cell_name, "units": self.units, "jit": self.jit,
                "precision": self.precision}
