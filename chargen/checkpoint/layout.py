"""What each array of a checkpoint is called and what shape it has, from the model config alone.

Format 2 stores arrays by name (chargen/checkpoint/tensors.py), so any tool can tell what each is:

    model.safetensors        embedding                 (V, E)
                             lstm_0/kernel             (E, 4u)     a GRU run: gru_0/kernel (E, 3u)
                             lstm_0/recurrent_kernel   (u, 4u)                gru_0/recurrent_kernel (u, 3u)
                             lstm_0/bias               (4u,)                  gru_0/bias (2, 3u)
                             lstm_1/...  output/kernel (u_last, V)  output/bias (V,)
    train_state.safetensors  lstm_0/h  lstm_0/c  ...   (B, u)      a GRU layer: gru_0/h only
                             dropout_0/seed  ...       (2,) int64  with --dropout: each Dropout layer's RNG
    optimizer.safetensors    iteration  learning_rate  embedding/momentum  lstm_0/kernel/velocity  ...

The names are the model's own: a layer's name (chargen/net/model.py names them embedding, lstm_i or gru_i,
dropout_i, logits) and the Keras name of the weight, with the inner "lstm_cell" or "gru_cell" dropped and
two renamed so they say what they are: embedding/embeddings is `embedding`, the logits layer is
`output`. `weight_names` derives them from a built model's variables and `weight_layout` (chargen/net/layout.py,
from each cell's own weight shapes) from the config: what a file must hold, checked before a model is
built; tests pin that the two agree. A layer's state names are its cell's (`Cell.state`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from chargen.errors import CheckpointError
from chargen.net import NAMES, get_cell
from chargen.net.layout import weight_layout, weight_shapes

__all__ = ["cell_of", "checkpoint_name", "in_order", "optimizer_names", "state_layout", "weight_layout",
           "weight_names", "weight_shapes"]

Shape = tuple[int, ...]
RENAMED = {"embedding/embeddings": "embedding", "logits": "output"}  # a Keras path or layer -> its checkpoint name


def cell_of(cfg: Any) -> str:
    """The run's cell (ModelConfig.cell; a config.json written before cells were a choice means lstm)."""
    cell = getattr(cfg, "cell", "lstm")
    if cell not in NAMES:
        raise CheckpointError(f"cell {cell!r} is not one this chargen knows ({', '.join(NAMES)}); upgrade chargen")
    return cell


def checkpoint_name(path: str) -> str:
    """A Keras variable path as a checkpoint name: lstm_0/lstm_cell/kernel -> lstm_0/kernel, logits/bias -> output/bias."""
    if path in RENAMED:
        return RENAMED[path]
    parts = path.split("/")
    layer = RENAMED.get(parts[0], parts[0])
    return f"{layer}/{parts[-1]}" if len(parts) > 1 else layer


def weight_names(variables: Sequence[Any]) -> list[str]:
    """Checkpoint names of a model's weights (model.weights, in get_weights() order), from their Keras paths."""
    return [checkpoint_name(v.path) for v in variables]


def state_layout(cfg: Any, batch_size: int) -> list[tuple[str, Shape, "np.dtype | None"]]:
    """(name, shape, dtype) of the training state, in the order the engine gives it: each layer's state tensors
    (all B rows, in stream order, float32), then each Dropout layer's RNG state (chargen/net/model.py puts one after each
    layer; Keras keeps it as integers, dtype None: any integer type)."""
    cell = get_cell(cell_of(cfg))
    layout = [(f"{cell.name}_{i}/{s}", (batch_size, u), np.dtype(np.float32))
              for i, u in enumerate(cfg.units) for s in cell.state]
    if cfg.dropout > 0:
        layout += [(f"dropout_{i}/seed", (2,), None) for i in range(len(cfg.units))]
    return layout


def optimizer_names(variables: Sequence[Any], model_variables: Sequence[Any]) -> list[str]:
    """Checkpoint names of the optimizer's variables: a slot Keras calls lstm_0_lstm_cell_kernel_momentum is
    lstm_0/kernel/momentum (the weight's name, then the slot); iteration and learning_rate keep theirs."""
    prefixes = sorted(((v.path.replace("/", "_") + "_", checkpoint_name(v.path)) for v in model_variables),
                      key=lambda p: -len(p[0]))  # the longest first: lstm_1 must not take lstm_10's slots
    names = []
    for v in variables:
        match = next(((prefix, n) for prefix, n in prefixes if v.name.startswith(prefix)), None)
        names.append(f"{match[1]}/{v.name[len(match[0]):]}" if match else v.name)
    if len(set(names)) != len(names):
        raise RuntimeError(f"two optimizer variables have the same checkpoint name: {names}; this is a bug")
    return names


def in_order(arrays: dict[str, np.ndarray], names: Sequence[str], where: Any) -> list[np.ndarray]:
    """The arrays of a named file in `names`' order; CheckpointError naming what is missing or left over."""
    missing = [n for n in names if n not in arrays]
    extra = sorted(set(arrays) - set(names))
    if missing or extra:
        said = (f"no array named {_few(missing)}" if missing else "") + (" and " if missing and extra else "") + \
               (f"arrays the model has no place for: {_few(extra)}" if extra else "")
        raise CheckpointError(f"{where}: {said}; the files do not belong together, use another snapshot or retrain")
    return [arrays[n] for n in names]


def _few(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")

