"""The GRU cell (chargen.gru) against keras.layers.GRU(reset_after=True) and a float64 numpy reference."""

import numpy as np
import pytest

V, E, UNITS = 11, 5, (7, 6)  # vocabulary, embedding, units per layer: tiny, odd sizes
B, T = 3, 9


def _ids(seed, b=B, t=T):
    return np.random.default_rng(seed).integers(0, V, size=(b, t)).astype(np.int32)


def _char_model(kind, b=B, t=T):
    """Embedding -> 2 stateful GRU layers -> Dense logits, named as chargen names its layers."""
    import keras

    from chargen.gru import FastGRU, keras_gru

    inputs = keras.Input(batch_shape=(b, t), dtype="int32", name="ids")
    x = keras.layers.Embedding(V, E, name="embedding")(inputs)
    for i, u in enumerate(UNITS):
        x = (FastGRU(u, name=f"gru_{i}") if kind == "fast" else keras_gru(u, f"gru_{i}"))(x)
    return keras.Model(inputs, keras.layers.Dense(V, name="logits")(x))


def _perturbed(model, seed):
    """Random weights, biases included (a fresh GRU's are zero, which would hide bias mistakes)."""
    rng = np.random.default_rng(seed)
    model.set_weights([w + rng.normal(0, 0.4, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _pair(jit, b=B, t=T, seed=0):
    ref = _perturbed(_char_model("keras", b, t), seed)
    fast = _char_model("fast", b, t)
    for layer in _gru_layers(fast):
        layer.jit = jit
    fast.set_weights(ref.get_weights())
    return ref, fast


def _gru_layers(model):
    return [layer for layer in model.layers if getattr(layer, "stateful", False)]


def _states(model):
    return [np.array(layer.states[0].numpy()) for layer in _gru_layers(model)]


def _weights(layer):
    return [np.asarray(v.numpy(), np.float64) for v in (layer.cell.kernel, layer.cell.recurrent_kernel, layer.cell.bias)]


# ---------------------------------------------------------------- the maths, in float64

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _reference_step(x, h, kernel, recurrent_kernel, bias):
    """The formulas of chargen.gru's docstring, written directly, in float64."""
    u = h.shape[1]
    xp, m = x @ kernel + bias[0], h @ recurrent_kernel + bias[1]
    z = _sigmoid(xp[:, :u] + m[:, :u])
    r = _sigmoid(xp[:, u:2 * u] + m[:, u:2 * u])
    hh = np.tanh(xp[:, 2 * u:] + r * m[:, 2 * u:])
    return z * h + (1 - z) * hh


def _reference_model(model, ids, hs):
    """Run the whole char model in float64 over a window; returns logits (B, T, V) and the final states."""
    get = {v.path: np.asarray(v.numpy(), np.float64) for v in model.weights}
    emb = get["embedding/embeddings"]
    layers = [_weights(layer) for layer in _gru_layers(model)]
    hs, out = [h.astype(np.float64) for h in hs], []
    for t in range(ids.shape[1]):
        x = emb[ids[:, t]]
        for i, w in enumerate(layers):
            hs[i] = x = _reference_step(x, hs[i], *w)
        out.append(x @ get["logits/kernel"] + get["logits/bias"])
    return np.stack(out, axis=1), hs


def test_layout_and_formulas_are_keras_grus():
    from chargen.gru import weight_shapes

    ref = _perturbed(_char_model("keras"), 2)
    layers = _gru_layers(ref)
    for layer, dim, u in zip(layers, (E, UNITS[0]), UNITS):
        assert layer.cell.reset_after and layer.stateful
        assert [tuple(v.shape) for v in layer.weights] == list(weight_shapes(dim, u).values())
        assert [v.path.rsplit("/", 1)[1] for v in layer.weights] == list(weight_shapes(dim, u))
    start = [np.zeros((B, u)) for u in UNITS]
    for seed in (1, 2):  # the second window starts from the carried state
        got = np.asarray(ref(_ids(seed)))
        want, start = _reference_model(ref, _ids(seed), start)
        np.testing.assert_allclose(got, want, atol=1e-5)
        for h, h_ref in zip(_states(ref), start):
            np.testing.assert_allclose(h, h_ref, atol=1e-5)


# ---------------------------------------------------------------- FastGRU: training

@pytest.mark.parametrize("jit", [True, False])
def test_fast_gru_same_outputs_and_state_across_calls_and_reset(jit):
    ref, fast = _pair(jit)
    for x in (_ids(1), _ids(2)):  # the second call starts from the state the first left
        np.testing.assert_allclose(np.asarray(fast(x)), np.asarray(ref(x)), atol=1e-5)
        for hf, hr in zip(_states(fast), _states(ref)):
            np.testing.assert_allclose(hf, hr, atol=1e-5)
    carried = np.asarray(fast(_ids(1)))
    for layer in _gru_layers(ref) + _gru_layers(fast):
        layer.reset_state()
    assert not any(h.any() for h in _states(fast))
    fresh = np.asarray(fast(_ids(1)))
    assert not np.allclose(carried, fresh)
    np.testing.assert_allclose(fresh, np.asarray(ref(_ids(1))), atol=1e-5)


@pytest.mark.parametrize("jit", [True, False])
def test_fast_gru_gradients_match_autodiff_through_keras_gru(jit):
    """d(loss) w.r.t. every weight and the input of the GRU stack, over two windows with state carried."""
    import keras
    import tensorflow as tf

    from chargen.gru import FastGRU, keras_gru

    def stack(kind):  # float inputs, so the gradient w.r.t. the input is defined
        inputs = keras.Input(batch_shape=(B, T, E))
        x = inputs
        for i, u in enumerate(UNITS):
            x = (FastGRU(u, jit=jit, name=f"gru_{i}") if kind == "fast" else keras_gru(u, f"gru_{i}"))(x)
        return keras.Model(inputs, keras.layers.Dense(V, name="logits")(x))

    ref, fast = _perturbed(stack("keras"), 1), stack("fast")
    fast.set_weights(ref.get_weights())
    rng = np.random.default_rng(9)
    xs = [tf.constant(rng.normal(size=(B, T, E)).astype(np.float32)) for _ in range(2)]
    y = _ids(9)

    def grads_of(model):
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = model(x, training=True)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
            return tape.gradient(loss, [x] + model.trainable_variables)
        return [[tf.convert_to_tensor(g).numpy() for g in step(x)] for x in xs]

    names = ["input"] + [v.path for v in ref.trainable_variables]
    for g_ref, g_fast in zip(grads_of(ref), grads_of(fast)):
        assert [g.shape for g in g_fast] == [g.shape for g in g_ref]
        for a, b, name in zip(g_ref, g_fast, names):
            rel = np.abs(a - b).max() / max(np.abs(a).max(), 1e-12)
            assert rel < 1e-5, f"{name}: relative gradient error {rel:.2e}"


@pytest.mark.parametrize("jit", [True, False])
def test_recurrence_gradients_including_initial_state_and_recurrent_bias(jit):
    """dL/d(xp, h0, U, b_r) against autodiff of a plain loop, with the loss also on the final h."""
    import tensorflow as tf

    from chargen.gru import recurrence

    rng = np.random.default_rng(5)
    u, t, b = 4, 6, 2
    xp, h0, rec, rec_bias = (tf.constant(rng.normal(0, 0.8, s).astype(np.float32))
                             for s in ((t, b, 3 * u), (b, u), (u, 3 * u), (3 * u,)))
    w_h, w_last = (tf.constant(rng.normal(size=s).astype(np.float32)) for s in ((t, b, u), (b, u)))

    def plain(xp, h0, rec, rec_bias):
        h, hs = h0, []
        for k in range(t):
            xz, xr, xh = tf.split(xp[k], 3, axis=1)
            mz, mr, mh = tf.split(h @ rec + rec_bias, 3, axis=1)
            z, r = tf.sigmoid(xz + mz), tf.sigmoid(xr + mr)
            h = z * h + (1 - z) * tf.tanh(xh + r * mh)
            hs.append(h)
        return tf.stack(hs)

    def grads(fn):
        args = [xp, h0, rec, rec_bias]
        with tf.GradientTape() as tape:
            tape.watch(args)
            hs = fn(*args)
            loss = tf.reduce_sum(hs * w_h) + tf.reduce_sum(hs[-1] ** 2 * w_last)
        return [hs] + tape.gradient(loss, args)

    for a, b_ in zip(grads(plain), grads(lambda *a: recurrence(*a, jit=jit))):
        np.testing.assert_allclose(b_.numpy(), a.numpy(), atol=1e-5, rtol=1e-5)


def test_fast_gru_is_a_drop_in_for_the_stock_layer():
    ref, fast = _pair(True)
    assert [v.path for v in fast.weights] == [v.path for v in ref.weights]  # gru_0/gru_cell/kernel, ...
    assert [tuple(v.shape) for v in fast.weights] == [tuple(v.shape) for v in ref.weights]
    assert [v.path for v in _gru_layers(fast)[0].states] == [v.path for v in _gru_layers(ref)[0].states]
    # fast -> stock: the stock model then computes what the fast one does
    fast.set_weights([w * 0.5 for w in fast.get_weights()])
    ref.set_weights(fast.get_weights())
    np.testing.assert_allclose(np.asarray(ref(_ids(1))), np.asarray(fast(_ids(1))), atol=1e-5)
    # the state is not a weight: a batch-1 model of any length takes the same weights
    one, one_ref = _char_model("fast", 1, None), _char_model("keras", 1, None)
    for model in (one, one_ref):
        model.set_weights(fast.get_weights())
    assert len(one.weights) == len(fast.weights) == 1 + 3 * 2 + 2
    for t in (3, 5):  # seq_len None: any window length, state carried across them
        x = _ids(t, b=1, t=t)
        np.testing.assert_allclose(np.asarray(one(x)), np.asarray(one_ref(x)), atol=1e-5)
    # the same initializers (GRUCell's): glorot_uniform kernel, orthogonal recurrent kernel, zero bias.
    # (Not the same values for a seed: the stock cell draws its seeds when it is constructed, and
    # one more for its dropout, so a second layer's draws are shifted.)
    fresh_ref, fresh_fast = _gru_layers(_char_model("keras")), _gru_layers(_char_model("fast"))
    for stock, layer, dim, u in zip(fresh_ref, fresh_fast, (E, UNITS[0]), UNITS):
        for model_layer in (stock, layer):
            kernel, rec, bias = _weights(model_layer)
            limit = np.sqrt(6 / (dim + 3 * u))
            assert np.abs(kernel).max() <= limit and kernel.std() > 0.4 * limit  # uniform(-limit, limit)
            np.testing.assert_allclose(rec @ rec.T, np.eye(u), atol=1e-5)  # orthonormal rows
            assert not bias.any()


def test_wrong_batch_size_is_a_clear_error():
    from chargen.gru import FastGRU

    layer = FastGRU(4, name="gru_x")
    layer(np.zeros((3, 5, 2), np.float32))
    with pytest.raises(ValueError, match="batch size 3.*batch size 2"):
        layer(np.zeros((2, 5, 2), np.float32))
    with pytest.raises(ValueError, match="FastGRU needs a static batch size"):
        FastGRU(4).build((None, 5, 2))


# ---------------------------------------------------------------- numpy and TensorFlow steps: generation

def _numpy_layers(model):
    from chargen.gru import NumpyGRULayer

    emb = _weights_by_path(model)["embedding/embeddings"]
    return [NumpyGRULayer.from_keras(layer, emb if i == 0 else None) for i, layer in enumerate(_gru_layers(model))]


def _weights_by_path(model):
    return {v.path: np.asarray(v.numpy()) for v in model.weights}


@pytest.mark.parametrize("rows", [1, 5])
def test_numpy_step_against_float64_reference_whole_and_in_halves(rows):
    from chargen.gru import NumpyGRULayer

    rng = np.random.default_rng(rows)
    d, u = 6, 9  # odd units: halves of 4 and 5
    kernel, rec, bias = (rng.normal(0, 0.5, s) for s in ((d, 3 * u), (u, 3 * u), (2, 3 * u)))
    emb = rng.normal(size=(V, d))
    x, h = rng.normal(size=(rows, d)).astype(np.float32), rng.normal(0, 0.5, (rows, u)).astype(np.float32)
    ids = rng.integers(0, V, rows)
    want_x = _reference_step(x.astype(np.float64), h.astype(np.float64), kernel, rec, bias)
    want_ids = _reference_step(emb[ids], h.astype(np.float64), kernel, rec, bias)
    by_x, by_id = NumpyGRULayer(kernel, rec, bias), NumpyGRULayer(kernel, rec, bias, embedding=emb)
    assert len(by_x.parts(halves=True)) == 2
    h_before, x_before = h.copy(), x.copy()
    for halves in (False, True):
        got_x, got_ids = by_x.step(x, h, halves=halves), by_id.step(ids, h, halves=halves)
        assert got_x.dtype == got_ids.dtype == np.float32 and got_x.shape == (rows, u)
        np.testing.assert_allclose(got_x, want_x, atol=1e-5)
        np.testing.assert_allclose(got_ids, want_ids, atol=1e-5)
    np.testing.assert_array_equal(h, h_before)  # pure: the given state and input are not modified
    np.testing.assert_array_equal(x, x_before)


def test_numpy_step_against_keras_gru_one_token_at_a_time():
    """A batch of R rows stepped by the stock layers (seq_len 1, state carried) and by the numpy layers."""
    rows = 4
    ref = _char_model("keras", rows, 1)
    ref.set_weights(_perturbed(_char_model("keras"), 3).get_weights())
    layers = _numpy_layers(ref)
    w = _weights_by_path(ref)
    hs = [np.zeros((rows, u), np.float32) for u in UNITS]
    ids = _ids(7, b=rows, t=12)
    for t in range(ids.shape[1]):
        want = np.asarray(ref(ids[:, t:t + 1]))[:, 0]
        x = ids[:, t]
        for i, layer in enumerate(layers):
            hs[i] = x = layer.step(x, hs[i], halves=t % 2 == 1)
        np.testing.assert_allclose(x @ w["logits/kernel"] + w["logits/bias"], want, atol=1e-5)
        for h, h_ref in zip(hs, _states(ref)):
            np.testing.assert_allclose(h, h_ref, atol=1e-5)


def test_tensorflow_step_against_numpy_step_and_through_savedmodel_and_tflite(tmp_path):
    """The exported step graph (token, h0, h1 -> h0, h1) built from the numpy layers' arrays."""
    import tensorflow as tf

    from chargen.exporters.tflite import load_tflite_step
    from chargen.gru import tf_layer_step

    layers = _numpy_layers(_perturbed(_char_model("keras"), 5))
    specs = [tf.TensorSpec((1,), tf.int32, name="token")] + [tf.TensorSpec((1, u), tf.float32, name=f"h{i}")
                                                               for i, u in enumerate(UNITS)]

    class GRUStep(tf.Module):
        def __init__(self):
            super().__init__()
            self.layers = [{k: tf.Variable(a, trainable=False) for k, a in layer.arrays().items()} for layer in layers]

        @tf.function(input_signature=specs)
        def step(self, token, *hs):
            out, x = {}, token
            for i, (arrays, h) in enumerate(zip(self.layers, hs)):
                out[f"h{i}"] = x = tf_layer_step(arrays, x, h)
            return out

    module = GRUStep()
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures={"serving_default": module.step.get_concrete_function()})
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.step.get_concrete_function()], module)
    (tmp_path / "model.tflite").write_bytes(converter.convert())
    steppers = {"eager": lambda **kw: module.step(kw["token"], *(kw[f"h{i}"] for i in range(len(UNITS)))),
                "savedmodel": tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"],
                "tflite": load_tflite_step(tmp_path / "model.tflite")}
    for name, step in steppers.items():
        hs = [np.zeros((1, u), np.float32) for u in UNITS]
        feed = {f"h{i}": h for i, h in enumerate(hs)}
        for t in range(6):
            token = np.array([(5 * t + 2) % V], np.int32)
            got = {k: np.asarray(v) for k, v in step(token=token, **feed).items()}
            x = token
            for i, layer in enumerate(layers):
                hs[i] = x = layer.step(x, hs[i])
                np.testing.assert_allclose(got[f"h{i}"], hs[i], atol=1e-5, err_msg=f"{name}, step {t}")
            feed = {k: got[k] for k in feed}

