"""--precision for training: bf16 mixed precision in the fast kernel, how auto chooses, what is refused.

(The bf16 recurrence's hand-written gradient is checked against autodiff in tests/test_cells.py,
beside the fp32 one, for every cell.)

bf16 is close to fp32, not equal: its products round their operands to bfloat16 (8 significant
bits, ~0.4% relative), so outputs and gradients are compared with a tolerance that such
rounding meets and a wrong gradient (a missing term, a wrong transpose) does not.
"""

import json

import numpy as np
import pytest

import chargen
from cells import CELLS
from chargen import checkpoint as ckpt
from chargen.cli import main
from chargen.config import ModelConfig, TrainConfig
from chargen.errors import ConfigError
from chargen.net.model import build_model, get_state, recurrent_layers
from chargen.precision import BF16_MIN_UNITS, cpu_has_native_bf16, training_precision

from conftest import TINY

CFG = ModelConfig(vocab_size=11, embed=5, units=(7, 6))
B, T = 3, 9


def _ids(seed):
    return np.random.default_rng(seed).integers(0, CFG.vocab_size, size=(B, T)).astype(np.int32)


@pytest.mark.parametrize("cell", CELLS)
def test_bf16_model_keeps_float32_weights_state_and_gradients_close_to_fp32(cell):
    import tensorflow as tf

    cfg = ModelConfig(vocab_size=11, embed=5, units=(7, 6), cell=cell)
    fp32 = build_model(cfg, B, T, kernel="fast")
    rng = np.random.default_rng(0)
    fp32.set_weights([w + rng.normal(0, 0.3, w.shape).astype(np.float32) for w in fp32.get_weights()])
    bf16 = build_model(cfg, B, T, kernel="fast", precision="bf16")
    bf16.set_weights(fp32.get_weights())
    y = _ids(9)

    def run(model):
        out = []
        for x in (_ids(1), _ids(2)):  # the second window starts from the carried state
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
            out.append((logits, [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]))
        return out

    for (l32, g32), (l16, g16) in zip(run(fp32), run(bf16)):
        assert l16.dtype == tf.float32 and all(g.dtype == tf.float32 for g in g16)
        gap = np.abs(l16.numpy() - l32.numpy()).max()
        assert 0 < gap < 2e-2 * np.abs(l32.numpy()).max()  # really rounded, and only that
        for a, b in zip(g32, g16):
            assert np.abs(b.numpy() - a.numpy()).max() < 3e-2 * max(np.abs(a.numpy()).max(), 1e-6)
    assert all(w.dtype == np.float32 for w in bf16.get_weights())
    assert all(v.dtype == "float32" for layer in recurrent_layers(bf16) for v in layer.states)
    for layer32, layer16 in zip(get_state(fp32), get_state(bf16)):  # h within 2e-2; the LSTM's c relative to its size
        for k, (a32, a16) in enumerate(zip(layer32, layer16, strict=True)):
            assert np.abs(a16 - a32).max() < 2e-2 * (1 if k == 0 else np.abs(a32).max())


def _cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: fpu sse avx2 {flags}\n")
    return path


def test_auto_picks_bf16_only_with_native_bf16_big_layers_and_the_fast_kernel(tmp_path, monkeypatch):
    from chargen import precision

    assert cpu_has_native_bf16(_cpuinfo(tmp_path, "avx512f avx512_bf16"))
    assert cpu_has_native_bf16(_cpuinfo(tmp_path, "amx_bf16 amx_tile"))
    assert not cpu_has_native_bf16(_cpuinfo(tmp_path, "avx512f avx512_vnni"))
    assert not cpu_has_native_bf16(tmp_path / "missing")

    auto, big, small = TrainConfig(), (BF16_MIN_UNITS, 64), (BF16_MIN_UNITS - 1,)
    for has in (True, False):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda has=has: has)
        assert training_precision(auto, big, "fast", gpu=False)[0] == ("bf16" if has else "fp32")
        assert training_precision(auto, small, "fast", gpu=False)[0] == "fp32"
        assert training_precision(auto, big, "keras", gpu=True)[0] == "fp32"
        assert training_precision(auto, big, "fast", gpu=True)[0] == "fp32"
        assert training_precision(TrainConfig(precision="fp32"), big, "fast", False)[0] == "fp32"
        assert training_precision(TrainConfig(precision="bf16"), small, "fast", False)[0] == "bf16"
    with pytest.raises(ConfigError, match="^precision 'bf16' needs kernel 'fast'"):
        training_precision(TrainConfig(precision="bf16", kernel="keras"), big, "keras", False)
    with pytest.raises(ConfigError, match="^precision must be one of auto, bf16, fp32"):
        TrainConfig(precision="fp16").validate()


def _book(tmp_path, small_text):
    book = tmp_path / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    return book


def _recorded(run_dir):
    return json.loads((run_dir / "config.json").read_text())["train"]["precision"]


class _Stop(Exception):
    pass


def _stop_after_first_epoch(info):
    if info.epoch == 1:
        raise _Stop


def test_bf16_run_records_it_saves_float32_and_resumes_bit_exactly(tmp_path, small_text):
    book = _book(tmp_path, small_text)
    opts = dict(progress=False, seed=7, precision="bf16", **TINY)
    one = chargen.train(book, root=tmp_path / "a", epochs=2, **opts)
    with pytest.raises(_Stop):
        chargen.train(book, root=tmp_path / "b", epochs=2, callbacks=[_stop_after_first_epoch], **opts)
    two = chargen.train(book, root=tmp_path / "b", epochs=2, resume=True, progress=False, precision="auto")
    assert _recorded(one.run_dir) == _recorded(two.run_dir) == "bf16"
    assert [h["train_loss"] for h in one.history] == [h["train_loss"] for h in two.history]
    wa, wb = (ckpt.read_tensors(ckpt.snapshot_dir(r.run_dir, "last") / "model.safetensors") for r in (one, two))
    for k in wa:
        assert wa[k].dtype == np.float32
        np.testing.assert_array_equal(wa[k], wb[k])
    fp32 = chargen.train(book, root=tmp_path / "c", epochs=2, **{**opts, "precision": "fp32"})
    assert _recorded(fp32.run_dir) == "fp32"
    assert fp32.history[-1]["train_loss"] != one.history[-1]["train_loss"]  # bf16 did change the arithmetic
    assert abs(fp32.history[-1]["val_loss"] - one.history[-1]["val_loss"]) < 0.02
    with pytest.raises(ConfigError, match="only epochs, steps, minutes"):
        chargen.train(book, root=tmp_path / "b", epochs=3, resume=True, progress=False, precision="fp32")


def test_auto_records_its_choice_and_old_runs_resume_in_fp32(tmp_path, small_text, monkeypatch):
    from chargen import precision

    book = _book(tmp_path, small_text)
    run = chargen.train(book, root=tmp_path / "ck", epochs=1, seed=1, progress=False, **TINY).run_dir
    assert _recorded(run) == ("bf16" if cpu_has_native_bf16() and max(TINY["units"]) >= BF16_MIN_UNITS else "fp32")
    # From here auto would choose bf16 (as for big layers on a CPU with BF16), so what follows shows
    # that a recorded choice, not auto, decides a resumed run's precision.
    monkeypatch.setattr(precision, "BF16_MIN_UNITS", 1)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    chosen = chargen.train(book, root=tmp_path / "auto", epochs=1, seed=1, progress=False, **TINY).run_dir
    assert _recorded(chosen) == "bf16"
    old = chargen.train(book, root=tmp_path / "old", epochs=1, seed=1, progress=False, precision="fp32", **TINY)
    for config in [old.run_dir / "config.json", *old.run_dir.glob("snapshots/*/config.json")]:  # as before --precision
        doc = json.loads(config.read_text())
        del doc["train"]["precision"]
        config.write_text(json.dumps(doc))
    resumed = chargen.train(book, root=tmp_path / "old", epochs=2, resume=True, progress=False)
    assert _recorded(resumed.run_dir) == "fp32"


def test_bf16_with_the_keras_lstm_is_refused_before_anything_is_written(tmp_path, small_text, capsys):
    book = _book(tmp_path, small_text)
    with pytest.raises(ConfigError, match="^precision 'bf16' needs kernel 'fast'"):
        chargen.train(book, root=tmp_path / "ck", precision="bf16", kernel="keras", progress=False, **TINY)
    assert not (tmp_path / "ck").exists()
    rc = main(["train", str(book), "--root", str(tmp_path / "ck"), "--precision", "bf16", "--lstm", "keras"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "set --kernel 'fast' or --precision 'fp32'" in err[0]
    with pytest.raises(SystemExit) as exit_:  # argparse refuses a value outside the field's choices
        main(["train", str(book), "--root", str(tmp_path / "ck"), "--precision", "half"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--precision: invalid choice: 'half'" in err
    assert not (tmp_path / "ck").exists()
