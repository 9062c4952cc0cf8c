"""Export a checkpoint as a batch-1, single-step model that any TensorFlow runtime can stream with.

The exported function takes one character id and the LSTM state as plain tensors and returns
the next-character logits and probabilities plus the new state, under the same names:

    inputs   token (1,) int32, h0 c0 h1 c1 ... (1, units) float32
    outputs  logits (1, V), probs (1, V), h0 c0 h1 c1 ... (1, units) float32

so a caller streams by copying the state outputs back into the inputs; zeros are the start
state. There are no state variables inside: the caller owns the state, which is what lets a
server keep one per user, or a phone app pause and resume. The maths is the numpy engine's
(`chargen.sampling.NumpyLSTM`, Keras gate order i, f, c, o) built from the same arrays, and
every export is checked against it before it is put in place.

    OUT/  saved_model.pb variables/ ...   (savedmodel)   or   model.tflite   (tflite)
          tokenizer.json                  the checkpoint's, byte for byte
          chargen_export.json             format version, inputs/outputs, units, characters

The web format (chargen.export_web) is a static page that runs the model in a browser instead.

The folder is written under a temporary name beside OUT and renamed at the end, so a failure
leaves nothing half-written.

(The module is `exporting`, not `export`: a submodule named `export` would replace the
function `chargen.export` with itself as soon as it was imported.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from chargen import checkpoint as ckpt
from chargen.errors import ConfigError, ExportError
from chargen.paths import check_path, folder_mode
from chargen.sampling import NumpyLSTM
from chargen.tokenizer import start_token

FORMAT = "chargen-export"
VERSION = 1
FORMATS = ("savedmodel", "tflite", "web")
DEFAULT_DIR = Path("exports")
SIGNATURE = "serving_default"
MANIFEST = "chargen_export.json"
TFLITE_FILE = "model.tflite"


def state_names(layers: int) -> list[tuple[str, str]]:
    """The (h, c) input and output names per LSTM layer: [("h0", "c0"), ("h1", "c1"), ...]."""
    return [(f"h{i}", f"c{i}") for i in range(layers)]


def default_out(run: Path, format: str) -> Path:
    """exports/<run name>-<format>; for a snapshot folder inside a run, the run's name."""
    name = ckpt.run_of(run).name
    return DEFAULT_DIR / f"{name}-{format}"


def export(checkpoint: str | os.PathLike[str] | None = None, out: str | os.PathLike[str] | None = None,
           format: str = "savedmodel", which: str = "best", root: str | os.PathLike[str] = "checkpoints",
           overwrite: bool = False) -> Path:
    """Write a checkpoint's batch-1 single-step model to `out` and return the folder written.

    `checkpoint`, `which` and `root` pick the snapshot as `chargen.load` does (None: the newest
    run). `out` defaults to exports/<run name>-<format>. An existing `out` is refused unless
    `overwrite`, and even then only a previous export (or an empty folder) is replaced.
    """
    if format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(map(repr, FORMATS))}, got {format!r}")
    ckpt.check_which(which)
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder (str or os.PathLike) or None, got {type(out).__name__}")
    run = ckpt.resolve_run(checkpoint, root)
    snap = ckpt.open_snapshot(run, which)
    out = Path(out) if out is not None else default_out(run, format)
    check_path(out, "--out")
    _check_out(out, overwrite)  # before the slow part: refuse early, create nothing
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        os.chmod(tmp, folder_mode())  # mkdtemp made it 0o700: readable by whoever can read the user's files
    except OSError as e:
        raise ExportError(f"cannot create {out}: {e.strerror or e}; choose another --out") from None
    try:
        (tmp / "tokenizer.json").write_bytes(snap.tokenizer_bytes)  # as read: the run may be pruned meanwhile
        if format == "web":  # no TensorFlow: a page, its engine and the arrays (checked when read back)
            from chargen import export_web

            export_web.write(tmp, snap, _manifest_head(snap, run, which, format), MANIFEST)
        else:
            stepper = _numpy_stepper(snap.weights, len(snap.model.units))
            module = _step_module(stepper, snap.model.units)
            if format == "savedmodel":
                _write_savedmodel(module, tmp)
            else:
                (tmp / TFLITE_FILE).write_bytes(_to_tflite(module))
            (tmp / MANIFEST).write_text(_manifest(snap, run, which, format), encoding="utf-8")
            _check_against_numpy(tmp, format, stepper, snap.model.units, snap.model.vocab_size)
        _fsync_tree(tmp)
        _put_in_place(tmp, out, overwrite)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(f"writing {out} failed ({e.strerror or e}); nothing was written, "
                          "free space or choose another --out") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---------------------------------------------------------------- the model

def _numpy_stepper(weights: list[np.ndarray], layers: int) -> NumpyLSTM:
    # get_weights() order (checkpoint.weight_shapes): embedding, (kernel, recurrent, bias) per layer, dense
    per_layer = [tuple(weights[1 + 3 * i: 4 + 3 * i]) for i in range(layers)]
    return NumpyLSTM(weights[0], per_layer, weights[-2], weights[-1])


def _step_module(stepper: NumpyLSTM, units: tuple[int, ...], rows: int | None = 1):
    """A tf.Module holding the arrays as (non-trainable) variables, with `step` as a tf.function.

    `rows` is the batch of the step's signature: 1 for an export, None (any number of rows, set
    by the runtime) for chargen's own int8 engine (chargen/quantized.py).
    """
    import tensorflow as tf

    names = state_names(len(units))
    specs = [tf.TensorSpec((rows,), tf.int32, name="token")]
    for (h, c), u in zip(names, units):
        specs += [tf.TensorSpec((rows, u), tf.float32, name=h), tf.TensorSpec((rows, u), tf.float32, name=c)]

    class CharStep(tf.Module):
        def __init__(self):
            super().__init__(name="chargen_step")
            var = lambda a, n: tf.Variable(a, trainable=False, name=n)  # noqa: E731
            self.first_table = var(stepper.first_table, "first_table")  # id -> layer-0 input pre-activations
            self.first_rec = var(stepper.first_rec, "first_recurrent")
            self.stacked = [(var(k, f"stacked_kernel_{i + 1}"), var(b, f"bias_{i + 1}"))
                            for i, (k, b) in enumerate(stepper.stacked)]
            self.dense_kernel = var(stepper.dense_kernel, "dense_kernel")
            self.dense_bias = var(stepper.dense_bias, "dense_bias")

        @tf.function(input_signature=specs)
        def step(self, token, *state):
            out, x = {}, None
            for i, (hn, cn) in enumerate(names):
                h, c = state[2 * i], state[2 * i + 1]
                if i == 0:
                    z = tf.gather(self.first_table, token) + tf.matmul(h, self.first_rec)
                else:
                    kernel, bias = self.stacked[i - 1]
                    z = tf.matmul(tf.concat([x, h], axis=1), kernel) + bias
                i_g, f_g, g, o_g = tf.split(z, 4, axis=1)  # Keras gate order: input, forget, cell, output
                c = tf.sigmoid(f_g) * c + tf.sigmoid(i_g) * tf.tanh(g)
                h = tf.sigmoid(o_g) * tf.tanh(c)
                out[hn], out[cn] = h, c
                x = h
            logits = tf.matmul(x, self.dense_kernel) + self.dense_bias
            return {"logits": logits, "probs": tf.nn.softmax(logits), **out}

    return CharStep()


def _write_savedmodel(module, folder: Path) -> None:
    import tensorflow as tf

    try:
        tf.saved_model.save(module, str(folder), signatures={SIGNATURE: module.step.get_concrete_function()})
    except tf.errors.OpError as e:  # TensorFlow's file layer reports a full disk or no permission this way
        raise OSError(e.message) from None


def _to_tflite(module, int8: bool = False) -> bytes:
    """The step as a TFLite flatbuffer; `int8`: TFLite's dynamic-range quantization (int8 weights, float in and out)."""
    import tensorflow as tf

    # Passing the module lets the converter freeze its variables into the flatbuffer and keep
    # the input/output names as a "serving_default" signature.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.step.get_concrete_function()], module)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: dynamic range
    return converter.convert()


def _manifest_head(snap: ckpt.Snapshot, run: Path, which: str, format: str) -> dict:
    """What every format's manifest says: the format, the model's sizes, the vocabulary and where it came from."""
    cfg = snap.model
    return {
        "format": FORMAT, "version": VERSION, "model_format": format,
        "units": list(cfg.units), "embed": cfg.embed, "vocab_size": cfg.vocab_size,
        "tokenizer": snap.tokenizer.kind,
        # token id i is chars[i] (with BPE a token's text can be several characters); tokenizer.json holds the same
        "chars": list(snap.tokenizer.tokens),
        # What chargen's Generator feeds first when there is no seed text.
        "start_token": start_token(snap.tokenizer),
        "source": {"run": run.name, "snapshot": snap.path.name, "which": which,
                   "epoch": snap.progress.get("epoch")},
    }


def _manifest(snap: ckpt.Snapshot, run: Path, which: str, format: str) -> str:
    cfg = snap.model
    tensor = lambda shape, dtype="float32": {"shape": list(shape), "dtype": dtype}  # noqa: E731
    state = {n: tensor((1, u)) for (h, c), u in zip(state_names(len(cfg.units)), cfg.units) for n in (h, c)}
    doc = {
        **_manifest_head(snap, run, which, format),
        "model_file": TFLITE_FILE if format == "tflite" else ".", "signature": SIGNATURE,
        "inputs": {"token": tensor((1,), "int32"), **state},
        "outputs": {"logits": tensor((1, cfg.vocab_size)), "probs": tensor((1, cfg.vocab_size)), **state},
        "state": [list(pair) for pair in state_names(len(cfg.units))],
        "usage": "start with zero state; feed one token and the state, sample from probs, then pass "
                 "the outputs named in 'state' back in as the inputs of the same names",
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- loading and checking

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
    """A callable step(token=..., h0=..., c0=..., ...) -> dict for an exported model.tflite (see tflite_interpreter)."""
    return tflite_interpreter(model_path=str(path)).get_signature_runner(SIGNATURE)


def _load_step(folder: Path, format: str):
    if format == "tflite":
        return load_tflite_step(folder / TFLITE_FILE)
    import tensorflow as tf

    return tf.saved_model.load(str(folder)).signatures[SIGNATURE]


def _check_against_numpy(folder: Path, format: str, stepper: NumpyLSTM, units: tuple[int, ...],
                         vocab_size: int, steps: int = 8) -> None:
    """Load what was written and stream a few tokens through it and through the numpy engine."""
    step = _load_step(folder, format)
    names = state_names(len(units))
    state = [(np.zeros((1, u), np.float32), np.zeros((1, u), np.float32)) for u in units]
    feed = {n: a for (hn, cn), (h, c) in zip(names, state) for n, a in ((hn, h), (cn, c))}
    for t in range(steps):
        token = np.array([(7 * t + 1) % vocab_size], np.int32)
        got = {k: np.asarray(v) for k, v in step(token=token, **feed).items()}
        logits, state = stepper.step(token, state)
        if not np.allclose(got["logits"], logits, atol=1e-4, rtol=1e-4):
            raise RuntimeError(f"the exported {format} model disagrees with chargen's numpy engine at step {t} "
                               f"(max |diff| {np.abs(got['logits'] - logits).max():.3g}); this is a bug")
        feed = {n: got[n] for pair in names for n in pair}


# ---------------------------------------------------------------- putting it in place

def _check_out(out: Path, overwrite: bool) -> None:
    if not os.path.lexists(out):
        return
    if not out.is_dir() or out.is_symlink():
        raise ExportError(f"{out} exists and is not a folder; choose another --out")
    if not overwrite:
        raise ExportError(f"{out} already exists; choose another --out or add --overwrite to replace it")
    if any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ExportError(f"{out} is not a chargen export (no {MANIFEST}), so --overwrite will not replace "
                          "it; choose another --out")


def _put_in_place(tmp: Path, out: Path, overwrite: bool) -> None:
    _check_out(out, overwrite)  # again: something may have appeared while we converted
    if not os.path.lexists(out):
        os.rename(tmp, out)
    else:
        # A folder cannot be swapped in one rename: move the old one aside first, delete it last.
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / "export")
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old / "export", out)  # put the previous export back
            os.rmdir(old)
            raise
        shutil.rmtree(old, ignore_errors=True)
    ckpt.fsync_path(out.parent)


def _fsync_tree(folder: Path) -> None:
    for dirpath, _, files in os.walk(folder):
        for f in files:
            ckpt.fsync_path(Path(dirpath) / f)
        ckpt.fsync_path(Path(dirpath))
