"""The network: one module per recurrent cell, and the registry that names them.

    net/cell.py          what a cell is to the rest of chargen (the Cell interface)
    net/lstm.py          the LSTM (Keras's gate order i, f, c, o; state h, c)
    net/gru.py           the GRU (keras.layers.GRU(reset_after=True); state h)
    net/recurrence.py    the cell-independent fast training loops: the recurrence, its gradient, bf16
    net/fast_layer.py    FastRecurrent: the stateful Keras layer around those loops, for any cell
    net/layout.py        the model's weights by name and shape, and its state's shapes (no TensorFlow)
    net/model.py         the stateful Keras model for a batch size; state get/set/check/reset
    net/numpy_engine.py  one time step of any stack of cells in numpy (what generation runs)

The registry maps a `--cell` name to the module that holds that cell. It is read without
importing any cell module, so the command line's choices cost nothing; a cell module imports no
TensorFlow either (only what builds or trains a model does, when called). A new cell is a new
module with a `CELL` (a chargen.net.cell.Cell) and one line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chargen.net.cell import Cell

CELLS = {"lstm": "chargen.net.lstm", "gru": "chargen.net.gru"}  # --cell name -> the module defining its CELL
NAMES = tuple(CELLS)


def get_cell(name: str) -> "Cell":
    """The cell named `name` ("lstm", "gru"); ValueError for a name the registry does not have."""
    if name not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(NAMES)}, got {name!r}")
    return importlib.import_module(CELLS[name]).CELL
