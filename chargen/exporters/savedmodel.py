"""`chargen export --format savedmodel`: the single-step graph as a SavedModel folder, for any TensorFlow runtime.

    OUT/  saved_model.pb variables/ ...   signature serving_default: step.py's inputs and outputs
          tokenizer.json  chargen_export.json
"""

from __future__ import annotations

from pathlib import Path

from chargen.checkpoint import Snapshot
from chargen.exporters.manifest import MANIFEST, step_manifest
from chargen.exporters.step import SIGNATURE, _numpy_stepper, _step_module, check_against_numpy


def write(folder: Path, snap: Snapshot, head: dict) -> None:
    """Write the SavedModel and its manifest into `folder`, then load it back and check it against numpy."""
    import tensorflow as tf

    cfg = snap.model
    stepper = _numpy_stepper(snap.weights, len(cfg.units))
    module = _step_module(stepper, cfg.units)
    try:
        tf.saved_model.save(module, str(folder), signatures={SIGNATURE: module.step.get_concrete_function()})
    except tf.errors.OpError as e:  # TensorFlow's file layer reports a full disk or no permission this way
        raise OSError(e.message) from None
    (folder / MANIFEST).write_text(step_manifest(head, "."), encoding="utf-8")
    check_against_numpy(tf.saved_model.load(str(folder)).signatures[SIGNATURE], "savedmodel", stepper, cfg.units,
                        cfg.vocab_size)
