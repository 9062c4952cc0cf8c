"""The stateful Keras model and its state, for any registered cell.

Embedding -> N stateful recurrent layers of the config's cell (each followed by dropout) -> Dense
logits. The batch size is part of the model: a stateful layer keeps one state per batch row in
variables of shape (B, units), created when the model is built (the LSTM's (h, c), the GRU's h).
So the training model (B rows) and the sampler (1 row) are two models with the same weights, and
batch shapes are always static: a dynamic batch dimension can silently broadcast state inside a
tf.function (keras#21183).

Keras facts this relies on (3.15): `Model` has no reset_states(), so each stateful layer is
reset on its own; state variables are not in get_weights(), so copying weights between models
of different batch sizes is safe.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from chargen.config import ModelConfig
from chargen.errors import StateError
from chargen.net import get_cell
from chargen.net.cell import Cell
from chargen.net.layout import State, state_shapes  # noqa: F401 (re-exported: the model's state type and shapes)

KERNELS = ("keras", "fast")


def build_model(cfg: ModelConfig, batch_size: int, seq_len: int | None = None, kernel: str = "keras",
                precision: str = "fp32"):
    """A stateful model for exactly `batch_size` rows; `seq_len=None` accepts any length.

    `kernel="fast"` uses the cell's fast CPU layer (chargen.net.recurrence: same weights, faster
    training) instead of the stock Keras layer; the two models' weights are interchangeable.
    `precision="bf16"` (fast kernel only) does the recurrent layers' matrix products in bfloat16;
    the weights, the state, the output layer and so the logits stay float32.
    """
    import keras

    cfg.validate()
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be 'keras' or 'fast', got {kernel!r}")
    if precision not in ("fp32", "bf16") or (precision == "bf16" and kernel != "fast"):
        raise ValueError(f"precision must be 'fp32', or 'bf16' with kernel='fast'; got {precision!r} with {kernel!r}")
    cell = get_cell(cfg.cell)
    inputs = keras.Input(batch_shape=(batch_size, seq_len), dtype="int32", name="ids")
    x = keras.layers.Embedding(cfg.vocab_size, cfg.embed, name="embedding")(inputs)
    for i, units in enumerate(cfg.units):
        name = f"{cell.name}_{i}"
        layer = cell.fast_layer(units, name, precision=precision) if kernel == "fast" else cell.keras_layer(units, name)
        x = layer(x)
        if cfg.dropout > 0:
            x = keras.layers.Dropout(cfg.dropout, name=f"dropout_{i}")(x)
    logits = keras.layers.Dense(cfg.vocab_size, name="logits")(x)
    return keras.Model(inputs, logits, name=f"chargen_b{batch_size}")


def recurrent_layers(model) -> list:
    """The model's stateful layers, first to last."""
    return [layer for layer in model.layers if getattr(layer, "stateful", False)]


def cell_of(model) -> Cell:
    """The cell a model built by build_model runs (its layers are named <cell>_<i>)."""
    return get_cell(recurrent_layers(model)[0].name.rsplit("_", 1)[0])


def reset_state(model) -> None:
    """Zero every row's state in every recurrent layer."""
    for layer in recurrent_layers(model):
        layer.reset_state()


def get_state(model) -> State:
    """Per layer, its state tensors as float32 numpy arrays of shape (batch, units): copies, not views."""
    return [tuple(np.array(v.numpy()) for v in layer.states) for layer in recurrent_layers(model)]


def check_state(state: object, shapes: Sequence[tuple[int, int]], names: Sequence[str] = ("h", "c")) -> State:
    """Validate a user-given state against the expected per-layer shapes; return float32 copies.

    `names` are the cell's state tensors (("h", "c") for the LSTM, ("h",) for the GRU). Refuses
    (StateError) the wrong number of layers or of tensors in a layer, a wrong shape, a non-float
    dtype and NaN/Inf values, and says what was expected. Never broadcasts.
    """
    each = "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"
    expected = f"expected {len(shapes)} layers of {each} with shapes " + ", ".join(f"({b}, {u})" for b, u in shapes)
    if not isinstance(state, (list, tuple)) or len(state) != len(shapes):
        got = f"{len(state)} layers" if isinstance(state, (list, tuple)) else type(state).__name__
        raise StateError(f"state has {got}; {expected}")
    out: State = []
    for i, (layer, shape) in enumerate(zip(state, shapes)):
        if not isinstance(layer, (list, tuple)) or len(layer) != len(names):
            raise StateError(f"state of layer {i} must be a tuple {each} of {len(names)} array"
                             f"{'s' * (len(names) != 1)}; {expected}")
        arrays = []
        for name, value in zip(names, layer):
            try:
                arr = np.asarray(value)
            except ValueError:  # a ragged nest of lists
                raise StateError(f"state {name} of layer {i} is not a rectangular array (rows of different "
                                 f"lengths); {expected}") from None
            if arr.dtype.kind != "f":
                raise StateError(f"state {name} of layer {i} has dtype {arr.dtype}, not float; {expected}")
            if arr.shape != tuple(shape):
                raise StateError(f"state {name} of layer {i} has shape {arr.shape}, not {tuple(shape)}; {expected}")
            with np.errstate(over="ignore"):
                arr = arr.astype(np.float32, copy=True)
            if not np.isfinite(arr).all():  # after the cast: 1e300 in float64 is Inf in float32
                raise StateError(f"state {name} of layer {i} contains NaN or Inf values, or values beyond float32's "
                                 f"range (about 3.4e38)")
            arrays.append(arr)
        out.append(tuple(arrays))
    return out


def set_state(model, state: object) -> None:
    """Assign a checked state to the model's recurrent layers (shapes must match exactly)."""
    layers = recurrent_layers(model)
    shapes = [tuple(layer.states[0].shape) for layer in layers]
    for layer, arrays in zip(layers, check_state(state, shapes, cell_of(model).state)):
        for variable, value in zip(layer.states, arrays):
            variable.assign(value)
