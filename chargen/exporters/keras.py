"""`chargen export --format keras`: the batch-1 stateful model as a .keras file of stock Keras layers.

    OUT/  model.keras  tokenizer.json  chargen_export.json

`keras.saving.load_model("OUT/model.keras")` (safe_mode on: no custom objects, no Lambda, no code
from the file) gives ids (1, T) int32 -> Embedding -> stateful LSTM or GRU layers (-> Dropout, inactive
at inference) -> Dense -> Softmax -> next-token probabilities (1, T, V), for one row. Each recurrent
layer keeps its state from call to call until reset_state(), so feeding one id at a time streams
text, exactly as chargen's Generator does; chargen need not be installed where it is loaded
(tests/test_keras_export.py loads it in a process where `import chargen` fails). docs/export.md
shows a Keras user how. The model is built by chargen's own builder with the stock kernel
(chargen.net.model.build_model(kernel="keras")), so a cell chargen adds comes out as its stock layer.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from chargen.checkpoint import Snapshot, assign_weights
from chargen.config import ModelConfig
from chargen.exporters.manifest import MANIFEST, to_json
from chargen.net.numpy_engine import NumpyEngine

KERAS_FILE = "model.keras"
USAGE = ("model = keras.saving.load_model('model.keras'); feed ids of shape (1, T) (one at a time to stream), read "
         "next-token probabilities (1, T, V) from its output; the recurrent layers keep their state between calls until "
         "layer.reset_state() on each; ids are tokenizer.json's (or 'chars' here: id i is chars[i])")


def keras_model(cfg: ModelConfig, weights: list[np.ndarray]):
    """A new batch-1 stateful Keras model of stock layers with these weights, ending in next-token probabilities."""
    import keras

    from chargen.net.model import build_model

    base = build_model(cfg, batch_size=1, seq_len=None, kernel="keras")
    assign_weights(base, weights, Path("<weights>"))
    probs = keras.layers.Softmax(name="probs")(base.outputs[0])
    return keras.Model(base.input, probs, name="chargen")  # one input tensor, not a list: called with ids as they are


def write(folder: Path, snap: Snapshot, head: dict) -> None:
    """Write model.keras and its manifest into `folder`, then load it back (safe mode) and check it against numpy."""
    model = keras_model(snap.model, snap.weights)
    with warnings.catch_warnings():  # Keras 3.15 saves each TF variable through np.array(x), which numpy 2 warns about
        warnings.simplefilter("ignore", DeprecationWarning)
        model.save(folder / KERAS_FILE)
    doc = {**head, "model_file": KERAS_FILE, "input": {"shape": [1, None], "dtype": "int32"},
           "output": {"shape": [1, None, snap.model.vocab_size], "dtype": "float32", "name": "probs"},
           "usage": USAGE}
    (folder / MANIFEST).write_text(to_json(doc), encoding="utf-8")
    check(folder / KERAS_FILE, snap)


def check(path: Path, snap: Snapshot, steps: int = 8) -> None:
    """Load the file back as a Keras user would and stream a few ids through it and through the numpy engine."""
    import keras

    model = keras.saving.load_model(path, safe_mode=True)
    cfg = snap.model
    engine = NumpyEngine.from_weights(cfg, snap.weights)
    state = engine.zero_state(1)
    for t in range(steps):
        token = np.array([(7 * t + 1) % cfg.vocab_size], np.int32)
        got = model(token[None, :], training=False).numpy()[0, -1]
        logits, state = engine.step(token, state)
        want = np.exp(logits[0] - logits[0].max())
        want /= want.sum()
        if not np.allclose(got, want, atol=1e-5, rtol=0):
            raise RuntimeError(f"the exported keras model disagrees with chargen's numpy engine at step {t} "
                               f"(max |diff| {np.abs(got - want).max():.3g}); this is a bug")
