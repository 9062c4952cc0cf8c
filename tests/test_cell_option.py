"""`--cell lstm|gru` from the command line to the checkpoint and back, and the `--kernel` option (`--lstm` kept)."""

import json
import math

import pytest

import chargen
from chargen import checkpoint as ckpt
from chargen.cli import main
from chargen.config import ModelConfig, TrainConfig, from_dict
from chargen.errors import ConfigError

from conftest import ROOT, TINY

FLAGS = ["--units", ",".join(map(str, TINY["units"])), "--embed", str(TINY["embed"]), "--batch-size",
         str(TINY["batch_size"]), "--seq-len", str(TINY["seq_len"]), "--seed", "2", "--quiet"]


@pytest.fixture(scope="module")
def gru_run(tmp_path_factory, small_text):
    d = tmp_path_factory.mktemp("gru-cli")
    (d / "book.txt").write_text(small_text, encoding="utf-8")
    assert main(["train", str(d / "book.txt"), "--root", str(d / "ck"), "--cell", "gru", "--lstm", "fast",
                 "--epochs", "1", *FLAGS]) == 0
    return d


def test_a_gru_trained_from_the_command_line_samples_evaluates_and_exports(gru_run, capsys):
    run = gru_run / "ck" / "book"
    doc = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert doc["model"]["cell"] == "gru" and doc["train"]["kernel"] == "fast" and "lstm" not in doc["train"]
    snap = ckpt.read_snapshot(ckpt.snapshot_dir(run, "last"))
    assert [w.shape for w in snap.weights][1:4] == [(8, 72), (24, 72), (2, 72)]  # keras.layers.GRU's layout
    assert [a.shape for a in snap.train_state] == [(4, 24), (4, 16)]  # h per layer, every stream
    capsys.readouterr()
    where = ["--root", str(gru_run / "ck"), "--checkpoint", "book"]
    assert main(["sample", *where, "--seed", "the ", "--length", "40", "--rng-seed", "1"]) == 0
    one = capsys.readouterr().out
    assert len(one) == 41 and one == chargen.load(run).generate("the ", 40, rng_seed=1) + "\n"
    assert main(["sample", *where, "--length", "20", "--num-samples", "3", "--rng-seed", "1"]) == 0
    assert capsys.readouterr().out.count("--- sample") == 3
    assert main(["eval", str(gru_run / "book.txt"), *where, "--json", "--quiet"]) == 0
    assert 0 < json.loads(capsys.readouterr().out)["bits_per_char"] < 8
    assert main(["export", "book", "--root", str(gru_run / "ck"), "--format", "web", "--out", str(gru_run / "web")]) == 0
    layers = json.loads((gru_run / "web" / "chargen_export.json").read_text(encoding="utf-8"))["layers"]
    assert [layer["cell"] for layer in layers] == ["gru", "gru"]


def test_a_run_resumes_with_its_own_cell_only(gru_run, capsys):
    book, root = gru_run / "book.txt", gru_run / "ck"
    with pytest.raises(ConfigError, match="^cell 'lstm' differs from the checkpoint's 'gru'"):
        chargen.train(book, root=root, resume=True, cell="lstm", progress=False)
    capsys.readouterr()
    assert main(["train", str(book), "--root", str(root), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert [h["epoch"] for h in chargen.history(root / "book")] == [1, 2]
    assert chargen.load(root / "book").config.cell == "gru"


def test_an_old_config_without_a_cell_is_an_lstm_and_its_lstm_option_is_the_kernel():
    doc = json.loads((ROOT / "tests" / "data" / "v1-format" / "config.json").read_text(encoding="utf-8"))
    assert "cell" not in doc["model"] and doc["train"]["lstm"] == "auto"  # written by chargen 0.1.0
    model, train, _ = ckpt.read_config(ROOT / "tests" / "data" / "v1-format" / "config.json")
    assert model.cell == "lstm" and train.kernel == "auto"
    assert from_dict(TrainConfig, {"lstm": "keras"}, "x").kernel == "keras"
    with pytest.raises(ConfigError, match="lstm is another name for kernel: give one of them"):
        from_dict(TrainConfig, {"lstm": "keras", "kernel": "fast"}, "x")
    with pytest.raises(ConfigError, match="^cell must be one of lstm, gru, got 'rnn'"):
        ModelConfig(vocab_size=3, cell="rnn").validate()


def test_a_gru_trains_with_the_stock_keras_layer_and_in_bf16_to_the_fast_kernels_loss(tmp_path, small_text):
    """The three ways a GRU trains (fast fp32, fast bf16, stock keras.layers.GRU) reach the same loss, and each
    run records the one it used. (The stock layer draws its initial weights in another order, so not equal.)"""
    book = tmp_path / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    losses = {}
    for kernel, precision in [("fast", "fp32"), ("fast", "bf16"), ("keras", "fp32")]:
        r = chargen.train(book, root=tmp_path / f"{kernel}-{precision}", epochs=1, seed=2, progress=False, cell="gru",
                          kernel=kernel, precision=precision, **TINY)
        train = json.loads((r.run_dir / "config.json").read_text(encoding="utf-8"))["train"]
        assert (train["kernel"], train["precision"]) == (kernel, precision)
        losses[kernel, precision] = r.history[-1]["val_loss"]
    fast = losses["fast", "fp32"]
    assert abs(losses["fast", "bf16"] - fast) < 0.01 and abs(losses["keras", "fp32"] - fast) < 0.1, losses
    assert fast < math.log(len(set(small_text))) - 0.2, losses  # it learned: below a uniform guess
