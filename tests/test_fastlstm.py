"""FastLSTM against keras.layers.LSTM: same weights give the same outputs, state and gradients."""

import numpy as np
import pytest

from chargen.config import ModelConfig
from chargen.model import build_model, get_state, lstm_layers, reset_state, set_state

CFG = ModelConfig(vocab_size=11, embed=5, units=(7, 6))
B, T = 3, 9


def _ids(seed, b=B, t=T):
    return np.random.default_rng(seed).integers(0, CFG.vocab_size, size=(b, t)).astype(np.int32)


def _pair(jit, b=B, t=T, seed=0):
    """A stock and a fast model with the same (perturbed, so not trivially symmetric) weights."""
    keras_model = build_model(CFG, b, t)
    rng = np.random.default_rng(seed)
    keras_model.set_weights([w + rng.normal(0, 0.3, w.shape).astype(np.float32) for w in keras_model.get_weights()])
    fast = build_model(CFG, b, t, lstm="fast")
    for layer in lstm_layers(fast):
        layer.jit = jit
    fast.set_weights(keras_model.get_weights())
    return keras_model, fast


def _dense(g):
    import tensorflow as tf

    return tf.convert_to_tensor(g).numpy()


@pytest.mark.parametrize("jit", [True, False])
def test_same_outputs_and_state_across_calls_and_reset(jit):
    ref, fast = _pair(jit)
    for x in (_ids(1), _ids(2)):  # the second call starts from the state the first left
        np.testing.assert_allclose(np.asarray(fast(x)), np.asarray(ref(x)), atol=1e-5)
        for (hr, cr), (hf, cf) in zip(get_state(ref), get_state(fast)):
            np.testing.assert_allclose(hf, hr, atol=1e-5)
            np.testing.assert_allclose(cf, cr, atol=1e-5)
    carried = np.asarray(fast(_ids(1)))
    reset_state(ref), reset_state(fast)
    assert all(not h.any() and not c.any() for h, c in get_state(fast))
    fresh = np.asarray(fast(_ids(1)))
    assert not np.allclose(carried, fresh)
    np.testing.assert_allclose(fresh, np.asarray(ref(_ids(1))), atol=1e-5)


@pytest.mark.parametrize("jit", [True, False])
def test_gradients_match_autodiff_through_keras_lstm(jit):
    import tensorflow as tf

    ref, fast = _pair(jit, seed=1)
    y = _ids(9)

    def grads_of(model):
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
            return tape.gradient(loss, model.trainable_variables)
        # two windows: the second one's gradients start from a carried, non-zero state
        return [[_dense(g) for g in step(x)] for x in (_ids(3), _ids(4))]

    for g_ref, g_fast in zip(grads_of(ref), grads_of(fast)):
        assert [g.shape for g in g_fast] == [g.shape for g in g_ref]
        for a, b, v in zip(g_ref, g_fast, ref.trainable_variables):
            rel = np.abs(a - b).max() / max(np.abs(a).max(), 1e-12)
            assert rel < 1e-5, f"{v.path}: relative gradient error {rel:.2e}"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("jit", [True, False])
def test_recurrence_gradients_including_initial_and_final_state(jit, precision):
    """dL/d(xp, h0, c0, U) against autodiff of a plain loop, with the loss also on the final c.

    In bf16 the plain loop does the same casts (bf16 operands, result back to float32); the two then
    differ by bf16 rounding (~0.4%), which a wrong gradient (a missing term, a wrong transpose) exceeds.
    """
    import tensorflow as tf

    from chargen.fastlstm import _recurrence

    rng = np.random.default_rng(5)
    u, t, b = (4, 6, 2) if precision == "fp32" else (8, 6, 3)
    xp, h0, c0, rec = (tf.constant(rng.normal(0, 0.8, s).astype(np.float32))
                       for s in ((t, b, 4 * u), (b, u), (b, u), (u, 4 * u)))
    w_h, w_c = (tf.constant(rng.normal(size=s).astype(np.float32)) for s in ((t, b, u), (b, u)))

    def product(h, rec):
        if precision == "fp32":
            return h @ rec
        return tf.cast(tf.cast(h, tf.bfloat16) @ tf.cast(rec, tf.bfloat16), tf.float32)

    def plain(xp, h0, c0, rec):
        h, c, hs = h0, c0, []
        for k in range(t):
            zi, zf, zg, zo = tf.split(xp[k] + product(h, rec), 4, axis=1)
            c = tf.sigmoid(zf) * c + tf.sigmoid(zi) * tf.tanh(zg)
            h = tf.sigmoid(zo) * tf.tanh(c)
            hs.append(h)
        return tf.stack(hs), c

    def grads(fn):
        args = [xp, h0, c0, rec]
        with tf.GradientTape() as tape:
            tape.watch(args)
            hs, c_last = fn(*args)
            loss = tf.reduce_sum(hs * w_h) + tf.reduce_sum(c_last * w_c)
        return [hs, c_last] + tape.gradient(loss, args)

    names = ("hs", "c_last", "d_xp", "d_h0", "d_c0", "d_rec")
    for name, a, b_ in zip(names, grads(plain), grads(lambda *a: _recurrence(*a, jit=jit, precision=precision))):
        assert b_.dtype == tf.float32, name
        if precision == "fp32":
            np.testing.assert_allclose(b_.numpy(), a.numpy(), atol=1e-5, rtol=1e-5)
        else:
            rel = np.abs(b_.numpy() - a.numpy()).max() / max(np.abs(a.numpy()).max(), 1e-12)
            assert rel < 2e-2, f"{name}: relative error {rel:.2e}"


def test_weights_interchangeable_with_the_stock_model():
    from chargen.sampling import NumpyLSTM

    ref, fast = _pair(True)
    assert [v.path for v in fast.weights] == [v.path for v in ref.weights]
    assert [tuple(v.shape) for v in fast.weights] == [tuple(v.shape) for v in ref.weights]
    # fast -> stock: the stock model then computes what the fast one does
    fast.set_weights([w * 0.5 for w in fast.get_weights()])
    ref.set_weights(fast.get_weights())
    np.testing.assert_allclose(np.asarray(ref(_ids(1))), np.asarray(fast(_ids(1))), atol=1e-5)
    # and a model of another batch size (like the sampler's) takes the same weights
    one = build_model(CFG, 1, None, lstm="fast")
    one.set_weights(fast.get_weights())
    assert NumpyLSTM.from_keras(fast).stacked[0][0].shape == (CFG.units[0] + 6, 24)  # [kernel; recurrent]
    # a new stock LSTM's bias initialisation (unit forget bias) is the same
    fresh_ref, fresh_fast = build_model(CFG, B, T), build_model(CFG, B, T, lstm="fast")
    np.testing.assert_array_equal(fresh_fast.get_weights()[3], fresh_ref.get_weights()[3])


def test_state_api_and_any_sequence_length():
    ref, fast = _pair(True, b=1, t=None)
    assert len(lstm_layers(fast)) == 2
    for t in (3, 5):  # seq_len=None: any window length, state carried across them
        x = _ids(t, b=1, t=t)
        np.testing.assert_allclose(np.asarray(fast(x)), np.asarray(ref(x)), atol=1e-5)
    state = get_state(ref)
    set_state(fast, state)
    for (hr, cr), (hf, cf) in zip(state, get_state(fast)):
        np.testing.assert_array_equal(hf, hr)
        np.testing.assert_array_equal(cf, cr)
    assert len(fast.weights) == len(ref.weights)  # the state variables are not weights


def test_wrong_batch_size_is_a_clear_error():
    from chargen.fastlstm import FastLSTM

    layer = FastLSTM(4, name="lstm_x")
    layer(np.zeros((3, 5, 2), np.float32))
    with pytest.raises(ValueError, match="batch size 3.*batch size 2"):
        layer(np.zeros((2, 5, 2), np.float32))
    with pytest.raises(ValueError, match="static batch size"):
        FastLSTM(4).build((None, 5, 2))
    with pytest.raises(ValueError, match="lstm must be"):
        build_model(CFG, 2, 4, lstm="cudnn")
