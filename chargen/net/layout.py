"""The model's weights by name and shape, in get_weights() order, and its state's shapes: no TensorFlow.

    embedding                  (V, E)
    <cell>_<i>/kernel          the cell's shapes (chargen/net/cell.py), for each layer i
    <cell>_<i>/recurrent_kernel
    <cell>_<i>/bias
    output/kernel              (units[-1], V)
    output/bias                (V,)

This is what checkpoints check weights against before any model is built, what the memory
estimates count, what names the arrays of a web export, and how the numpy engine and the exporter
find each layer's arrays in a flat list.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from chargen.config import ModelConfig
from chargen.net import get_cell

State = list[tuple[np.ndarray, ...]]  # per layer, the cell's state tensors (h first), each (rows, units)


def weight_layout(cfg: ModelConfig) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every array of get_weights(), in its order (the module docstring's names)."""
    cell = get_cell(cfg.cell)
    out: list[tuple[str, tuple[int, ...]]] = [("embedding", (cfg.vocab_size, cfg.embed))]
    inputs = cfg.embed
    for i, u in enumerate(cfg.units):
        out += [(f"{cell.name}_{i}/{role}", shape) for role, shape in cell.weight_shapes(inputs, u).items()]
        inputs = u
    return out + [("output/kernel", (inputs, cfg.vocab_size)), ("output/bias", (cfg.vocab_size,))]


def weight_shapes(cfg: ModelConfig) -> list[tuple[int, ...]]:
    """The shapes of get_weights() for a config, in its order."""
    return [shape for _, shape in weight_layout(cfg)]


def split_weights(cfg: ModelConfig, weights: Sequence[np.ndarray]):
    """get_weights() -> (embedding, per layer {role: array}, output kernel, output bias)."""
    names = [name for name, _ in weight_layout(cfg)]
    if len(names) != len(weights):
        raise ValueError(f"expected {len(names)} arrays for this model, got {len(weights)}")
    by_name = dict(zip(names, weights))
    cell = get_cell(cfg.cell)
    layers = [{role: by_name[f"{cell.name}_{i}/{role}"] for role in cell.weights}
              for i in range(len(cfg.units))]
    return by_name["embedding"], layers, by_name["output/kernel"], by_name["output/bias"]


def state_shapes(cfg: ModelConfig, rows: int) -> list[tuple[int, int]]:
    """Per layer, the (rows, units) shape every one of its state tensors has."""
    return [(rows, u) for u in cfg.units]


def zero_state(cell_name: str, units: Sequence[int], rows: int) -> State:
    """Per layer, the cell's state tensors as float32 zeros: the start of text."""
    count = len(get_cell(cell_name).state)
    return [tuple(np.zeros((rows, u), np.float32) for _ in range(count)) for u in units]
