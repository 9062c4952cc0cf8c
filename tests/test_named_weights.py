"""Checkpoint format 2 (issue #12 item 3): named arrays in safetensors files that any tool reads, names derived
from the model's layers and weights, and files whose header lies refused before any model is built.

The lying files are written byte by byte here (8-byte little-endian header length, JSON header, data), not
through the safetensors package, so each lie is exactly the one the test names."""

import json
import re
import shutil
import struct

import numpy as np
import pytest

import chargen
from chargen import checkpoint as ckpt
from chargen.checkpoint import layout
from chargen.config import ModelConfig
from chargen.errors import CheckpointError

NAMES_2X = ["embedding", "lstm_0/kernel", "lstm_0/recurrent_kernel", "lstm_0/bias", "lstm_1/kernel",
            "lstm_1/recurrent_kernel", "lstm_1/bias", "output/kernel", "output/bias"]


def test_a_snapshot_is_named_arrays_that_safetensors_itself_reads(trained_run):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    snap = ckpt.snapshot_dir(trained_run.run_dir, "last")
    assert sorted(p.name for p in snap.iterdir()) == ["config.json", "history.jsonl", "model.safetensors",
                                                      "optimizer.safetensors", "progress.json", "tokenizer.json",
                                                      "train_state.safetensors"]
    weights = load_file(snap / "model.safetensors")
    assert sorted(weights) == sorted(NAMES_2X)
    gen = chargen.load(trained_run.run_dir, which="last")
    for name, w in zip(NAMES_2X, gen.model.get_weights()):
        np.testing.assert_array_equal(weights[name], w)
    with safe_open(snap / "model.safetensors", "np") as f:
        assert f.metadata() == {"format": "chargen-checkpoint", "version": "2", "content": "model"}
    state = load_file(snap / "train_state.safetensors")
    assert sorted(state) == ["lstm_0/c", "lstm_0/h", "lstm_1/c", "lstm_1/h"]
    batch = json.loads((trained_run.run_dir / "config.json").read_text())["train"]["batch_size"]
    assert state["lstm_1/h"].shape == (batch, 16)
    optimizer = load_file(snap / "optimizer.safetensors")
    assert {"iteration", "learning_rate", "embedding/momentum", "lstm_1/recurrent_kernel/velocity",
            "output/bias/momentum"} <= set(optimizer) and len(optimizer) == 2 + 2 * len(NAMES_2X)
    assert json.loads((snap / "config.json").read_text())["version"] == 2


@pytest.mark.parametrize("kernel", ["keras", "fast"])
def test_names_from_the_models_variables_are_the_names_the_config_gives(kernel):
    from chargen.distributed import Engine
    from chargen.config import TrainConfig

    cfg = ModelConfig(vocab_size=11, embed=4, units=(6, 5, 3), dropout=0.1)
    model, optimizer = Engine("none", 2).build(cfg, TrainConfig(batch_size=2, seq_len=3), kernel)
    assert layout.weight_names(model.weights) == [n for n, _ in layout.weight_layout(cfg)]
    assert [tuple(w.shape) for w in model.weights] == layout.weight_shapes(cfg)
    optimizer.build(model.trainable_variables)
    names = layout.optimizer_names(optimizer.variables, model.weights)
    assert names[:4] == ["iteration", "learning_rate", "embedding/momentum", "embedding/velocity"]
    assert names[-2:] == ["output/bias/momentum", "output/bias/velocity"] and len(set(names)) == len(names)


@pytest.mark.parametrize("kernel", ["keras", "fast"])
def test_a_gru_stack_is_named_by_its_own_layers_and_weights(kernel):
    from chargen.net.model import build_model

    cfg = ModelConfig(vocab_size=9, embed=4, units=(6, 5), cell="gru")
    model = build_model(cfg, 2, kernel=kernel)
    assert layout.weight_names(model.weights) == [n for n, _ in layout.weight_layout(cfg)] == [
        "embedding", "gru_0/kernel", "gru_0/recurrent_kernel", "gru_0/bias", "gru_1/kernel", "gru_1/recurrent_kernel",
        "gru_1/bias", "output/kernel", "output/bias"]
    assert [tuple(w.shape) for w in model.weights] == layout.weight_shapes(cfg)
    assert [n for n, *_ in layout.state_layout(cfg, 2)] == ["gru_0/h", "gru_1/h"]


# ------------------------------------------------------------------ files that lie

def _safetensors(entries, data, header_length=None):
    """The bytes of a safetensors file: `entries` is the header (a dict, or a JSON text as is), `data` the rest."""
    header = entries if isinstance(entries, str) else json.dumps(entries)
    raw = header.encode()
    return struct.pack("<Q", len(raw) if header_length is None else header_length) + raw + data


def _honest(arrays):
    """The header and data a correct writer makes for {name: array} (in name order, contiguous)."""
    entries, data, at = {}, b"", 0
    for name, a in arrays.items():
        kind = {"float32": "F32", "float64": "F64"}[a.dtype.name]
        b = np.ascontiguousarray(a, a.dtype.newbyteorder("<")).tobytes()
        entries[name] = {"dtype": kind, "shape": list(a.shape), "data_offsets": [at, at + len(b)]}
        data, at = data + b, at + len(b)
    return entries, data


def _lie(change):
    def make(arrays):
        entries, data = _honest(arrays)
        return change(entries, data)
    return make


def _shift(entries, name, by):
    entries[name]["data_offsets"] = [o + by for o in entries[name]["data_offsets"]]
    return entries


LIES = {
    "header length of a terabyte": (_lie(lambda e, d: _safetensors(e, d, header_length=2**40)), "more than chargen reads"),
    "header length past the end": (_lie(lambda e, d: _safetensors(e, d)[:8 + len(json.dumps(e)) - 5]),
                                   "runs past the end of the file"),
    "fewer than 8 bytes": (lambda arrays: b"\x10\x00\x00", "fewer than the 8 of a safetensors header length"),
    "header not JSON": (_lie(lambda e, d: _safetensors("{'embedding': " + " " * 40, d)), "header is not JSON"),
    "header a list": (_lie(lambda e, d: _safetensors(json.dumps(list(e)), d)), "header is a JSON list"),
    "a name twice": (_lie(lambda e, d: _safetensors(json.dumps(e)[:-1] + ', "embedding": ' + json.dumps(e["embedding"])
                                                   + "}", d)), "names 'embedding' twice"),
    "overlapping ranges": (_lie(lambda e, d: _safetensors(_shift(e, "lstm_0/bias", -4), d)), "overlaps the array before"),
    "a gap between arrays": (_lie(lambda e, d: _safetensors(_shift(e, "output/bias", 8), d + b"\0" * 8)),
                             "leaves 8 bytes unused"),
    "a range past the end": (_lie(lambda e, d: _safetensors(e, d[:-4])), "truncated, or bytes past the arrays"),
    "range does not fit dtype x shape": (_lie(lambda e, d: _safetensors(
        {**e, "output/bias": {**e["output/bias"], "shape": [e["output/bias"]["shape"][0] + 1]}}, d)), "spans"),
    "float64 where float32 is expected": (lambda arrays: _safetensors(*_honest(
        {**arrays, "output/bias": arrays["output/bias"].astype(np.float64)})), "float64 values where float32"),
    "a dtype numpy has no name for": (_lie(lambda e, d: _safetensors(
        {**e, "embedding": {**e["embedding"], "dtype": "F8_E4M3"}}, d)), "has dtype 'F8_E4M3'"),
    "a shape the config does not have": (lambda arrays: _safetensors(*_honest(
        {**arrays, "lstm_1/kernel": arrays["lstm_1/kernel"].reshape(-1, 32)})), "has shape [48, 32], but the model"),
    "a name missing": (lambda arrays: _safetensors(*_honest({k: a for k, a in arrays.items() if k != "lstm_0/bias"})),
                       "no array named 'lstm_0/bias'"),
    "an unknown name": (lambda arrays: _safetensors(*_honest({**arrays, "lambda/code": np.zeros(1, np.float32)})),
                        "arrays it should not have: 'lambda/code'"),
    "positional names of format 1": (lambda arrays: _safetensors(*_honest(
        {f"a{i:04d}": a for i, a in enumerate(arrays.values())})), "no array named 'embedding'"),
}


@pytest.fixture()
def snapshot_copy(trained_run, tmp_path):
    d = tmp_path / "snap"
    shutil.copytree(ckpt.snapshot_dir(trained_run.run_dir, "last"), d)
    return d


@pytest.mark.parametrize("lie", list(LIES))
def test_a_weights_file_whose_header_lies_is_refused_before_any_model_is_built(snapshot_copy, monkeypatch, lie):
    import chargen.generate

    make, needle = LIES[lie]
    arrays = ckpt.read_tensors(snapshot_copy / "model.safetensors")
    (snapshot_copy / "model.safetensors").write_bytes(make({n: arrays[n] for n in NAMES_2X}))

    def no_model(*a, **k):
        raise AssertionError("a model was built from a file that lies")

    monkeypatch.setattr(chargen.generate, "build_model", no_model)
    with pytest.raises(CheckpointError, match=re.escape(str(snapshot_copy / "model.safetensors")) + ": .*"
                       + re.escape(needle)):
        chargen.load(snapshot_copy)


def test_the_honest_hand_written_file_loads(snapshot_copy):
    """The writer the lies start from is right: unchanged, its file loads and gives the same weights."""
    arrays = ckpt.read_tensors(snapshot_copy / "model.safetensors")
    before = chargen.load(snapshot_copy).model.get_weights()
    (snapshot_copy / "model.safetensors").write_bytes(_safetensors(*_honest({n: arrays[n] for n in NAMES_2X})))
    for a, b in zip(chargen.load(snapshot_copy).model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("file, change, needle", [
    ("train_state.safetensors", lambda a: {**a, "lstm_0/h": a["lstm_0/h"][:1]}, "'lstm_0/h' has shape [1, 24]"),
    ("train_state.safetensors", lambda a: {k: v for k, v in a.items() if k != "lstm_1/c"}, "no array named 'lstm_1/c'"),
    ("optimizer.safetensors", lambda a: {k: v for k, v in a.items() if k != "output/kernel/velocity"},
     "optimizer state is missing or does not fit"),
    ("optimizer.safetensors", lambda a: {**a, "iteration": a["iteration"].astype(np.float32)},
     "optimizer state is missing or does not fit"),
])
def test_a_resume_from_a_training_file_that_does_not_fit_is_refused(trained_run, tmp_path, file, change, needle):
    from safetensors.numpy import save

    run = tmp_path / "ck" / "book"
    shutil.copytree(trained_run.run_dir, run)
    snap = ckpt.snapshot_dir(run, "last")
    (snap / file).write_bytes(save(change(ckpt.read_tensors(snap / file))))
    with pytest.raises(CheckpointError, match=re.escape(needle)):
        chargen.train(trained_run.run_dir.parent.parent / "book.txt", root=tmp_path / "ck", resume=True, epochs=3,
                      progress=False)
