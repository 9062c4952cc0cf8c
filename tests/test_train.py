import json

import numpy as np
import pytest

import chargen
from chargen import checkpoint as ckpt
from chargen import trainer as train_mod
from chargen.errors import CheckpointError, ConfigError
from chargen.net.model import get_state

from conftest import TINY


def test_checkpoint_layout_and_history(trained_run):
    run = trained_run.run_dir
    for name in ("config.json", "tokenizer.json", "history.jsonl", "last", "best"):
        assert (run / name).exists(), name
    snap = ckpt.snapshot_dir(run, "last")
    for name in ("config.json", "tokenizer.json", "model.safetensors", "optimizer.safetensors", "train_state.safetensors",
                 "progress.json"):
        assert (snap / name).exists(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["format"] == "chargen-checkpoint" and cfg["version"] == 2
    assert cfg["model"]["units"] == [24, 16] and cfg["train"]["seed"] == 3
    lines = [json.loads(l) for l in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in lines] == [1, 2]
    for h in lines:
        assert h["val_loss"] > 0 and abs(h["val_bpc"] - h["val_loss"] / np.log(2)) < 1e-5
        assert h["chars_per_sec"] > 0 and h["seconds"] > 0
    assert lines[1]["train_loss"] < lines[0]["train_loss"]


def _loop(tmp_path, small_text, **over):
    book = tmp_path / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    captured = {}

    class Spy(train_mod._Loop):
        def run(self):
            captured["loop"] = self
            return super().run()

    orig = train_mod._Loop
    train_mod._Loop = Spy
    try:
        chargen.train(book, root=tmp_path / "ck", progress=False, seed=5, **{**TINY, "epochs": 2, **over})
    finally:
        train_mod._Loop = orig
    return captured["loop"]


def test_validation_leaves_training_state_and_weights_untouched(tmp_path, small_text):
    loop = _loop(tmp_path, small_text, epochs=1)
    loop.step = 0
    loop._train_epoch.__func__  # the loop object is reusable
    loop.model(np.asarray(loop.streams.batch(0)[0], np.int32))  # put something in the state
    before_state = get_state(loop.model)
    before_w = [w.copy() for w in loop.model.get_weights()]
    loss = loop._validate()
    assert loss > 0
    for (h0, c0), (h1, c1) in zip(before_state, get_state(loop.model)):
        np.testing.assert_array_equal(h0, h1)
        np.testing.assert_array_equal(c0, c1)
    for a, b in zip(before_w, loop.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(np.abs(h).sum() > 0 for h, _ in get_state(loop.eval_model))  # it did run, on its own state


def test_existing_run_is_not_overwritten_without_asking(trained_run, small_text):
    run = trained_run.run_dir
    book = run.parent.parent / "book.txt"
    with pytest.raises(CheckpointError, match="--resume"):
        chargen.train(book, root=run.parent, progress=False, epochs=1, **TINY)
    with pytest.raises(ConfigError, match="only epochs, steps, minutes"):
        chargen.train(book, root=run.parent, progress=False, resume=True, epochs=3, units=(8,))


class _Stop(Exception):
    pass


def _stop_after_first_epoch(info):
    if info.epoch == 1:
        raise _Stop  # after the epoch's snapshot was saved: like a crash between epochs


@pytest.mark.parametrize("lr_decay", ["none", "cosine"])
def test_resume_continues_and_matches_one_long_run(tmp_path, small_text, lr_decay):
    book = tmp_path / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    opts = dict(progress=False, seed=11, dropout=0.1, lr_decay=lr_decay, **TINY)
    one = chargen.train(book, root=tmp_path / "a", epochs=2, **opts)
    with pytest.raises(_Stop):
        chargen.train(book, root=tmp_path / "b", epochs=2, callbacks=[_stop_after_first_epoch], **opts)
    two = chargen.train(book, root=tmp_path / "b", epochs=2, resume=True, progress=False)
    assert [h["train_loss"] for h in one.history] == [h["train_loss"] for h in two.history]
    assert [h["val_loss"] for h in one.history] == [h["val_loss"] for h in two.history]
    wa, wb = (ckpt.read_tensors(ckpt.snapshot_dir(r.run_dir, "last") / "model.safetensors") for r in (one, two))
    assert sorted(wa) == sorted(wb)
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k])


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", ".."])
def test_names_cannot_escape_the_checkpoint_root(tmp_path, small_text, name):
    book = tmp_path / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    with pytest.raises(ConfigError, match="plain folder name"):
        chargen.train(book, root=tmp_path / "ck", name=name, progress=False, **TINY)


def test_cosine_lr_decay_is_the_default_and_reaches_lr_final_at_the_last_step(tmp_path, small_text):
    loop = _loop(tmp_path, small_text, lr=0.01, lr_decay="cosine", lr_final=0.2)
    n = loop.streams.num_batches
    lrs = [h["lr"] for h in loop.history]
    # after epoch 1 of 2 the cosine is a little past half way; at the end it is exactly lr x lr_final
    expected_mid = 0.01 * (0.2 + 0.8 * 0.5 * (1 + np.cos(np.pi * (n - 1) / (2 * n - 1))))
    assert lrs[0] == pytest.approx(expected_mid, rel=1e-5)
    assert lrs[1] == pytest.approx(0.01 * 0.2, rel=1e-5)
    (tmp_path / "c").mkdir()
    constant = _loop(tmp_path / "c", small_text, lr=0.01, lr_decay="none")
    assert [h["lr"] for h in constant.history] == pytest.approx([0.01, 0.01])
    (tmp_path / "d").mkdir()
    default = _loop(tmp_path / "d", small_text, lr=0.01)  # cosine to 0.1 x lr unless told otherwise
    assert default.history[-1]["lr"] == pytest.approx(0.01 * 0.1, rel=1e-5)
