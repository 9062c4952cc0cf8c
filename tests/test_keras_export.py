"""`chargen export --format keras` (issue #12 item 5): a .keras file of stock layers that plain Keras loads in safe
mode where chargen cannot even be imported, whose next-character probabilities, fed one character at a time with
the state carried by the layers, match the Generator's; `gen.keras_model()` gives the same model, a fresh copy."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import chargen
from cells import CELLS
from chargen.errors import ExportError

TEXT = "the state of each row carries on"

# A Keras user's script: no chargen (an import of it fails), the vocabulary from tokenizer.json, one id per call.
KERAS_USER = textwrap.dedent("""
    import json, sys
    sys.modules["chargen"] = None  # `import chargen` raises ImportError from here on
    try:
        import chargen  # noqa: F401
        raise SystemExit("chargen was importable")
    except ImportError:
        pass
    import numpy as np
    import keras

    folder, text = sys.argv[1], sys.argv[2]
    model = keras.saving.load_model(f"{folder}/model.keras")  # safe_mode=True is the default
    vocab = json.load(open(f"{folder}/tokenizer.json", encoding="utf-8"))["model"]["vocab"]
    probs = []
    for ch in text:
        probs.append(model(np.array([[vocab[ch]]], np.int32), training=False).numpy()[0, -1].tolist())
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_state()
    again = model(np.array([[vocab[text[0]]]], np.int32), training=False).numpy()[0, -1].tolist()
    print(json.dumps({"probs": probs, "after_reset": again,
                      "layers": sorted({type(layer).__module__.split(".")[0] + "." + type(layer).__name__
                                        for layer in model.layers})}))
""")


def _generator_probs(gen, text):
    """The Generator's next-character probabilities after each character of `text`, fed one at a time."""
    gen.reset()
    out = []
    for ch in text:
        logits = gen.prime(ch).astype(np.float64)
        p = np.exp(logits - logits.max())
        out.append(p / p.sum())
    return np.array(out)


@pytest.fixture(scope="module")
def keras_exports(trained_runs, tmp_path_factory):
    """export(cell) -> the keras export of that cell's tiny run, made once per module."""
    made = {}

    def export(cell):
        if cell not in made:
            out = tmp_path_factory.mktemp(f"keras-{cell}") / "exp"
            made[cell] = chargen.export(trained_runs(cell).run_dir, out=out, format="keras", which="last")
        return made[cell]
    return export


@pytest.fixture
def keras_export(keras_exports):
    return keras_exports("lstm")


@pytest.mark.parametrize("cell", CELLS)
def test_plain_keras_without_chargen_loads_it_and_streams_the_generators_probabilities(trained_runs, keras_exports,
                                                                                        cell, tmp_path):
    (tmp_path / "user.py").write_text(KERAS_USER)
    r = subprocess.run([sys.executable, str(tmp_path / "user.py"), str(keras_exports(cell)), TEXT],
                       capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)  # cwd: not the repository, so chargen is not on the path
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    stock = {"lstm": "keras.LSTM", "gru": "keras.GRU"}[cell]
    assert got["layers"] == sorted(["keras.Dense", "keras.Embedding", "keras.InputLayer", stock, "keras.Softmax"])
    want = _generator_probs(chargen.load(trained_runs(cell).run_dir, which="last"), TEXT)
    assert np.abs(np.array(got["probs"]) - want).max() < 1e-5
    np.testing.assert_allclose(got["after_reset"], want[0], atol=1e-5)  # reset_state() is the start again
    assert np.abs(want[1:] - want[:-1]).max() > 1e-2  # the probabilities do move with the text


def test_the_folder_holds_the_model_the_vocabulary_and_a_manifest(trained_run, keras_export):
    assert sorted(p.name for p in keras_export.iterdir()) == ["chargen_export.json", "model.keras", "tokenizer.json"]
    manifest = json.loads((keras_export / "chargen_export.json").read_text(encoding="utf-8"))
    assert manifest["model_format"] == "keras" and manifest["model_file"] == "model.keras"
    assert manifest["output"]["shape"][-1] == manifest["vocab_size"] == len(manifest["chars"])
    snap = chargen.load(trained_run.run_dir, which="last").source
    assert (keras_export / "tokenizer.json").read_bytes() == (snap / "tokenizer.json").read_bytes()


@pytest.mark.parametrize("cell", CELLS)
def test_gen_keras_model_is_the_same_model_as_a_fresh_copy(trained_runs, keras_exports, cell):
    import keras

    gen = chargen.load(trained_runs(cell).run_dir, which="last")
    model = gen.keras_model()
    assert model is not gen.model and model is not gen.keras_model()
    loaded = keras.saving.load_model(keras_exports(cell) / "model.keras")
    assert [type(a).__name__ for a in model.layers] == [type(b).__name__ for b in loaded.layers]
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    ids = gen.tokenizer.encode(TEXT).astype(np.int32)[None, :]
    probs = model(ids, training=False).numpy()[0]
    np.testing.assert_allclose(probs, _generator_probs(gen, TEXT), atol=1e-5)
    model.layers[-1].trainable = False  # a user's changes to the copy leave the Generator alone
    model.get_layer(f"{cell}_0").reset_state()
    assert gen.generate("the ", 20, temperature=0) == chargen.load(trained_runs(cell).run_dir, which="last").generate(
        "the ", 20, temperature=0)


def test_the_command_line_writes_it_and_refuses_to_overwrite(trained_run, tmp_path):
    r = subprocess.run([sys.executable, "-m", "chargen", "export", str(trained_run.run_dir), "--format", "keras",
                        "--out", str(tmp_path / "k")], capture_output=True, text=True, timeout=600,
                       env=_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"exported keras to {tmp_path / 'k'}" and (tmp_path / "k" / "model.keras").is_file()
    with pytest.raises(ExportError, match="already exists"):
        chargen.export(trained_run.run_dir, out=tmp_path / "k", format="keras")


def _env():
    import os

    from conftest import ROOT

    return {**os.environ, "PYTHONPATH": str(ROOT)}
