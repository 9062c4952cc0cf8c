"""The network and its LSTM state.

Embedding -> N stateful LSTM layers (each followed by dropout) -> Dense logits. The batch size
is part of the model: a stateful LSTM keeps one (h, c) per batch row in variables of shape
(B, units), created when the model is built. So the training model (B rows) and the sampler
(1 row) are two models with the same weights, and batch shapes are always static: a dynamic
batch dimension can silently broadcast state inside a tf.function (keras#21183).

Keras facts this relies on (3.15): `Model` has no reset_states(), so each stateful layer is
reset on its own; state variables are not in get_weights(), so copying weights between models
of different batch sizes is safe; the LSTM settings here (tanh, sigmoid, no recurrent dropout,
unroll=False, use_bias) keep it eligible for the fused cuDNN kernel on a GPU.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from chargen.config import ModelConfig
from chargen.errors import StateError

State = list[tuple[np.ndarray, np.ndarray]]  # per layer: (h, c), each (batch, units)


def build_model(cfg: ModelConfig, batch_size: int, seq_len: int | None = None, lstm: str = "keras",
                precision: str = "fp32"):
    """A stateful model for exactly `batch_size` rows; `seq_len=None` accepts any length.

    `lstm="fast"` uses chargen.fastlstm.FastLSTM (same weights, faster CPU training) instead of
    keras.layers.LSTM; the two models' weights are interchangeable. `precision="bf16"` (FastLSTM
    only) does the LSTM layers' matrix products in bfloat16; the weights, the state, the output
    layer and so the logits stay float32, and the weights are the same either way.
    """
    import keras

    cfg.validate()
    if lstm not in ("keras", "fast"):
        raise ValueError(f"lstm must be 'keras' or 'fast', got {lstm!r}")
    if precision not in ("fp32", "bf16") or (precision == "bf16" and lstm != "fast"):
        raise ValueError(f"precision must be 'fp32', or 'bf16' with lstm='fast'; got {precision!r} with {lstm!r}")
    inputs = keras.Input(batch_shape=(batch_size, seq_len), dtype="int32", name="ids")
    x = keras.layers.Embedding(cfg.vocab_size, cfg.embed, name="embedding")(inputs)
    for i, units in enumerate(cfg.units):
        if lstm == "fast":
            from chargen.fastlstm import FastLSTM

            x = FastLSTM(units, precision=precision, name=f"lstm_{i}")(x)
        else:
            x = keras.layers.LSTM(units, return_sequences=True, stateful=True, name=f"lstm_{i}")(x)
        if cfg.dropout > 0:
            x = keras.layers.Dropout(cfg.dropout, name=f"dropout_{i}")(x)
    logits = keras.layers.Dense(cfg.vocab_size, name="logits")(x)
    return keras.Model(inputs, logits, name=f"chargen_b{batch_size}")


def lstm_layers(model) -> list:
    return [layer for layer in model.layers if getattr(layer, "stateful", False)]


def batch_size_of(model) -> int:
    return int(model.inputs[0].shape[0])


def reset_state(model) -> None:
    """Zero every row's (h, c) in every LSTM layer."""
    for layer in lstm_layers(model):
        layer.reset_state()


def get_state(model) -> State:
    """Per layer (h, c) as float32 numpy arrays of shape (batch, units): copies, not views."""
    return [(np.array(layer.states[0].numpy()), np.array(layer.states[1].numpy())) for layer in lstm_layers(model)]


def state_shapes(cfg: ModelConfig, batch_size: int) -> list[tuple[int, int]]:
    return [(batch_size, u) for u in cfg.units]


def check_state(state: object, shapes: Sequence[tuple[int, int]]) -> State:
    """Validate a user-given state against the expected per-layer shapes; return float32 copies.

    Refuses (StateError) the wrong number of layers, a non-pair, a wrong shape, a non-float
    dtype and NaN/Inf values, and says what was expected. Never broadcasts.
    """
    expected = "expected " + str(len(shapes)) + " layers of (h, c) with shapes " + ", ".join(
        f"({b}, {u})" for b, u in shapes)
    if not isinstance(state, (list, tuple)) or len(state) != len(shapes):
        got = f"{len(state)} layers" if isinstance(state, (list, tuple)) else type(state).__name__
        raise StateError(f"state has {got}; {expected}")
    out: State = []
    for i, (pair, shape) in enumerate(zip(state, shapes)):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise StateError(f"state of layer {i} must be a pair (h, c); {expected}")
        arrays = []
        for name, value in zip(("h", "c"), pair):
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
        out.append((arrays[0], arrays[1]))
    return out


def set_state(model, state: object) -> None:
    """Assign a checked state to the model's LSTM layers (shape must match exactly)."""
    layers = lstm_layers(model)
    shapes = [tuple(layer.states[0].shape) for layer in layers]
    for layer, (h, c) in zip(layers, check_state(state, shapes)):
        layer.states[0].assign(h)
        layer.states[1].assign(c)
