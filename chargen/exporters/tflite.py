"""`chargen export --format tflite`: the single-step graph as model.tflite, and running one.

    OUT/  model.tflite                    signature serving_default: step.py's inputs and outputs
          tokenizer.json  chargen_export.json

`load_tflite_step(path)` gives a callable step(token=..., h0=..., ...) -> dict for such a
file, on `ai_edge_litert` where it is installed, else TensorFlow's own interpreter.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from chargen.checkpoint import Snapshot
from chargen.exporters.manifest import MANIFEST, step_manifest
from chargen.exporters.step import SIGNATURE, check_against_numpy, step_module
from chargen.net.numpy_engine import NumpyEngine

TFLITE_FILE = "model.tflite"


def write(folder: Path, snap: Snapshot, head: dict) -> None:
    """Write model.tflite and its manifest into `folder`, then load it back and check it against numpy."""
    cfg = snap.model
    engine = NumpyEngine.from_weights(cfg, snap.weights)
    (folder / TFLITE_FILE).write_bytes(to_tflite(step_module(engine)))
    (folder / MANIFEST).write_text(step_manifest(head, TFLITE_FILE), encoding="utf-8")
    check_against_numpy(load_tflite_step(folder / TFLITE_FILE), "tflite", engine, cfg.vocab_size)


def to_tflite(module, int8: bool = False) -> bytes:
    """The step as a TFLite flatbuffer; `int8`: TFLite's dynamic-range quantization (int8 weights, float in and out)."""
    import tensorflow as tf

    # Passing the module lets the converter freeze its variables into the flatbuffer and keep
    # the input/output names as a "serving_default" signature.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.step.get_concrete_function()], module)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: dynamic range
    return converter.convert()


def tflite_interpreter(**kwargs):
    """A TFLite interpreter (model_path= or model_content=, num_threads=, ...).

    `ai_edge_litert`'s when it is installed, else TensorFlow's own tf.lite.Interpreter, whose
    deprecation warning (TF 2.20+) is kept quiet here.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Interpreter(**kwargs)


def load_tflite_step(path: str | os.PathLike[str]):
    """A callable step(token=..., h0=..., ...) -> dict for an exported model.tflite (see tflite_interpreter)."""
    return tflite_interpreter(model_path=str(path)).get_signature_runner(SIGNATURE)
