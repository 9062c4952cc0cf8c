"""What a recurrent cell is to the rest of chargen: the interface every cell module implements.

The generic code (the model builder, the fast training layer's loops, the numpy engine, the
exporter, the int8 engine, the checkpoint's shape checks, the distributed state, the web export)
uses only these members, never a cell's weight layout or gate order. Like Keras's own split, a
cell computes one time step; the generic parts own the loop over time, the loop over layers and
any number of state tensors per layer.

Every layer of a cell holds three weights, as Keras's stock layers do: `kernel` (the input's
projection, `gates` blocks of `units` columns), `recurrent_kernel` (the previous h's) and `bias`.
A layer's state is a tuple of (rows, units) float32 arrays named by `state`, h first: h is what
the next layer (or the output layer) reads.

Nothing here imports TensorFlow: the members that need it import it when called.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np


def run_in_turn(fn: Callable, jobs: list[tuple]) -> list:
    """Run `fn` for each part of a layer, one after another on this thread."""
    return [fn(*job) for job in jobs]


class NumpyLayer:
    """One layer's time step in numpy for R rows, from Keras's arrays (a cell's `numpy_layer`).

    The first layer is given the embedding: it folds into the input projection, so that layer is
    fed token ids (R,) instead of vectors (R, D). A cell writes `parts`, `prepare`, `step_part`
    and `arrays`; `step` (the same for every cell) runs `prepare(inp, state)` once, then
    `step_part(prepared, state, part)` for each part (all of the units, or two halves of them,
    which `run` may do on two threads: chargen.cores), and joins the parts' results.
    """

    units: int
    by_id: bool  # the first layer: fed ids, with the embedding folded in

    def step(self, inp: np.ndarray, state: tuple[np.ndarray, ...], halves: bool = False,
             run: Callable = run_in_turn) -> tuple[np.ndarray, ...]:
        """The layer's new state from its input (ids for the first layer, else (R, D)) and its state. Pure."""
        cut = self.__dict__.setdefault("_cut", {})  # the parts, made once each way (halves copy the weights)
        if halves not in cut:
            cut[halves] = self.parts(halves)
        prepared = self.prepare(inp, state)
        out = run(self.step_part, [(prepared, state, part) for part in cut[halves]])
        return out[0] if len(out) == 1 else tuple(np.concatenate(pieces, axis=1) for pieces in zip(*out))

    def parts(self, halves: bool) -> list:
        """The layer whole, or cut into two halves of its units, each part with all of its gates."""
        raise NotImplementedError

    def prepare(self, inp: np.ndarray, state: tuple[np.ndarray, ...]) -> Any:
        """What every part reads of the layer's input (ids or (R, D)) and state, computed once per step."""
        return inp

    @staticmethod
    def step_part(prepared: Any, state: tuple[np.ndarray, ...], part: Any) -> tuple[np.ndarray, ...]:
        """The new state of the part's units (one (R, w) array per state tensor). Pure: nothing given is modified."""
        raise NotImplementedError

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays the step uses, by name, in Keras's gate order: what the cell's `tf_step` reads."""
        raise NotImplementedError


class Cell:
    """One kind of recurrent cell. A cell module defines a subclass and one instance of it, `CELL`."""

    name: str  # --cell, layer names (lstm_0, lstm_1, ...), the web engine's CELLS entry, checkpoints, manifests
    state: tuple[str, ...]  # a layer's state tensors, h first: ("h", "c") for the LSTM, ("h",) for the GRU
    gates: int  # blocks of `units` columns in kernel and recurrent_kernel
    keras_cell: str  # the stock Keras cell's name (lstm_cell), so the fast layer's weight paths are the stock's
    weights = ("kernel", "recurrent_kernel", "bias")  # a layer's arrays, in get_weights() order
    js_step: str | None = None  # its step's key in chargen/web/chargen.js's CELLS; None: the web engine has none

    # ---------------------------------------------------------------- layout (numpy only)

    def weight_shapes(self, input_dim: int, units: int) -> dict[str, tuple[int, ...]]:
        """A layer's weights by name, in get_weights() order: kernel, recurrent_kernel, bias."""
        raise NotImplementedError

    def initializers(self, units: int) -> dict[str, Any]:
        """Each weight's Keras initializer (a name or a callable(shape, dtype)), as the stock cell's."""
        raise NotImplementedError

    def split_bias(self, bias: Any) -> tuple[Any, Any | None]:
        """(input bias, recurrent bias or None): what is added to x W, and to h U inside the loop."""
        raise NotImplementedError

    # ---------------------------------------------------------------- training (TensorFlow, imported when called)

    def maths(self) -> Any:
        """The step forward and back for the fast layer's loops: a chargen.net.recurrence.CellMaths."""
        raise NotImplementedError

    def keras_layer(self, units: int, name: str) -> Any:
        """The stock stateful Keras layer (every step's output): cuDNN on a GPU, `--kernel keras`, Keras users."""
        raise NotImplementedError

    def fast_layer(self, units: int, name: str, jit: bool = True, precision: str = "fp32") -> Any:
        """chargen's CPU training layer for this cell, a drop-in for `keras_layer` (same weights, same state)."""
        from chargen.net.fast_layer import FastRecurrent

        return FastRecurrent(self.name, units, jit=jit, precision=precision, name=name)

    # ---------------------------------------------------------------- generation

    def numpy_layer(self, kernel: np.ndarray, recurrent_kernel: np.ndarray, bias: np.ndarray,
                    embedding: np.ndarray | None = None) -> NumpyLayer:
        raise NotImplementedError

    def tf_step(self, arrays: Mapping[str, Any], inp: Any, state: Sequence[Any]) -> tuple:
        """One step in TensorFlow from `NumpyLayer.arrays()` as tensors (the exported graph): the new state.

        `inp` is the token ids (R,) int32 for the first layer (it has "input_table"), else (R, D).
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<cell {self.name}>"


def unit_columns(units: int, lo: int, hi: int, blocks: Sequence[int]) -> np.ndarray:
    """Columns of a gate-block matrix (blocks of `units` columns) for units [lo, hi), blocks in the given order.

    How a layer is cut into parts of its units, each part with all its gates: the LSTM takes
    blocks (0, 1, 3, 2) (its three sigmoid gates next to each other), the GRU (0, 1, 2).
    """
    return np.concatenate([np.arange(b * units + lo, b * units + hi) for b in blocks])


def halves_of(units: int, halves: bool) -> list[tuple[int, int]]:
    """[(0, units)], or the two halves [(0, u // 2), (u // 2, u)] (a one-unit layer stays whole)."""
    cuts = [0, units // 2, units] if halves and units >= 2 else [0, units]
    return list(zip(cuts, cuts[1:]))
