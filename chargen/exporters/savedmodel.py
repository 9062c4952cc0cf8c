"""`chargen export --format savedmodel`: the single-step graph as a SavedModel folder, for any TensorFlow runtime.

    OUT/  saved_model.pb variables/ ...   signature serving_default: step.py's inputs and outputs
          tokenizer.json  chargen_export.json
"""

from __future__ import annotations

from pathlib import Path

from chargen.checkpoint import Snapshot
from chargen.exporters.manifest import MANIFEST, step_manifest
from chargen.exporters.step import SIGNATURE, check_against_numpy, step_module
from chargen.net.numpy_engine import NumpyEngine


def write(folder: Path, snap: Snapshot, head: dict) -> None:
    """Write the SavedModel and its manifest into `folder`, then load it back and check it against numpy."""
    import tensorflow as tf

    cfg = snap.model
    engine = NumpyEngine.from_weights(cfg, snap.weights)
    module = step_module(engine)
    try:
        tf.saved_model.save(module, str(folder), signatures={SIGNATURE: module.step.get_concrete_function()})
    except tf.errors.OpError as e:  # TensorFlow's file layer reports a full disk or no permission this way
        raise OSError(e.message) from None
    (folder / MANIFEST).write_text(step_manifest(head, "."), encoding="utf-8")
    check_against_numpy(tf.saved_model.load(str(folder)).signatures[SIGNATURE], "savedmodel", engine, cfg.vocab_size)
