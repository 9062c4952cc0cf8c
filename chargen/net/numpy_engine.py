"""The per-token engine of the Generator and the server: one time step of any stack of cells, in numpy.

At batch 1 each step reads every weight once to do a few matrix-vector products, so memory
bandwidth bounds it, not arithmetic; numpy does this with far less per-call overhead than a
TensorFlow call. The same code steps many rows at once (one per sample or client); those are
products bound by arithmetic, done per layer in two halves of its units that chargen.cores can
run side by side. What a layer computes is its cell's (chargen/net/<cell>.py: `numpy_layer`);
this module owns the embedding (folded into the first layer), the loop over layers, the halves
and the output layer.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from chargen.config import ModelConfig
from chargen.net import get_cell
from chargen.net.cell import Cell, run_in_turn
from chargen.net.layout import State, split_weights, zero_state

__all__ = ["NumpyEngine", "run_in_turn"]


class NumpyEngine:
    """Embedding -> recurrent layers of one cell -> Dense, one time step for R rows, from Keras's arrays.

    `layers` holds each layer's (kernel, recurrent_kernel, bias) as Keras has them.
    """

    def __init__(self, cell: Cell | str, embedding: np.ndarray, layers: Sequence[tuple[np.ndarray, ...]],
                 dense_kernel: np.ndarray, dense_bias: np.ndarray):
        self.cell = get_cell(cell) if isinstance(cell, str) else cell
        self.layers = [self.cell.numpy_layer(*arrays, embedding=embedding if i == 0 else None)
                       for i, arrays in enumerate(layers)]
        self.units = tuple(layer.units for layer in self.layers)
        self.dense_kernel = dense_kernel.astype(np.float32)
        self.dense_bias = dense_bias.astype(np.float32)

    @classmethod
    def from_weights(cls, cfg: ModelConfig, weights: Sequence[np.ndarray]) -> "NumpyEngine":
        """From get_weights() (or a checkpoint's arrays) of the model `cfg` describes."""
        cell = get_cell(cfg.cell)
        embedding, layers, kernel, bias = split_weights(cfg, weights)
        return cls(cell, embedding, [tuple(layer[r] for r in cell.weights) for layer in layers],
                   kernel, bias)

    def zero_state(self, rows: int = 1) -> State:
        return zero_state(self.cell.name, self.units, rows)

    def step(self, ids: np.ndarray, state: State, run: Callable = run_in_turn) -> tuple[np.ndarray, State]:
        """ids (R,) -> (logits (R, V), new state). Pure: the given state is not modified.

        One row computes each layer whole. Several rows compute each layer in two halves of its
        units, which `run` may do on two threads (chargen.cores): the products are then the same
        ones however many threads run them, so the result never depends on the thread count.
        (Done whole, a product for 8 or more rows is blocked differently by OpenBLAS than in halves,
        and differs in the last bits.)
        """
        new_state: State = []
        x = ids
        for layer, layer_state in zip(self.layers, state):
            new_state.append(layer.step(x, layer_state, halves=len(ids) > 1, run=run))
            x = new_state[-1][0]
        return self.logits(x), new_state

    def logits(self, top_h: np.ndarray) -> np.ndarray:
        """The next-token logits (R, V) from the top layer's h (R, units): all a state needs to predict."""
        return top_h @ self.dense_kernel + self.dense_bias
