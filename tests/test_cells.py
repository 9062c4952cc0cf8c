"""Every cell (chargen/net/<cell>.py) against the stock Keras layer and a float64 reference (tests/cells.py):
its layout and formulas, its fast training layer (outputs, state, gradients, a drop-in), its numpy step and its
TensorFlow step graph (eager, SavedModel, TFLite)."""

import numpy as np
import pytest

from cells import CELLS, plain_tf_loop, reference_step
from chargen.config import ModelConfig
from chargen.net import get_cell
from chargen.net.model import build_model, get_state, recurrent_layers, reset_state, set_state

V, E, UNITS = 11, 5, (7, 6)  # vocabulary, embedding, units per layer: tiny, odd sizes
B, T = 3, 9


def _cfg(cell):
    return ModelConfig(vocab_size=V, embed=E, units=UNITS, cell=cell)


def _ids(seed, b=B, t=T):
    return np.random.default_rng(seed).integers(0, V, size=(b, t)).astype(np.int32)


def _perturbed(model, seed):
    """Random weights, biases included (a fresh layer's bias is constant, which would hide bias mistakes)."""
    rng = np.random.default_rng(seed)
    model.set_weights([w + rng.normal(0, 0.4, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _pair(cell, jit, b=B, t=T, seed=0):
    """A stock and a fast model with the same perturbed weights."""
    ref = _perturbed(build_model(_cfg(cell), b, t), seed)
    fast = build_model(_cfg(cell), b, t, kernel="fast")
    for layer in recurrent_layers(fast):
        layer.jit = jit
    fast.set_weights(ref.get_weights())
    return ref, fast


def _layer_weights(layer):
    return [np.asarray(v.numpy(), np.float64) for v in layer.weights]


def _reference_model(cell, model, ids, state):
    """The whole char model in float64 over a window: logits (B, T, V) and the final state."""
    w = {v.path: np.asarray(v.numpy(), np.float64) for v in model.weights}
    layers = [_layer_weights(layer) for layer in recurrent_layers(model)]
    out = []
    for t in range(ids.shape[1]):
        x = w["embedding/embeddings"][ids[:, t]]
        for i, arrays in enumerate(layers):
            state[i] = reference_step(cell, x, state[i], *arrays)
            x = state[i][0]
        out.append(x @ w["logits/kernel"] + w["logits/bias"])
    return np.stack(out, axis=1), state


@pytest.mark.parametrize("cell", CELLS)
def test_the_stock_layer_has_the_cells_layout_and_computes_its_formulas(cell):
    spec = get_cell(cell)
    ref = _perturbed(build_model(_cfg(cell), B, T), 2)
    for i, (layer, dim, u) in enumerate(zip(recurrent_layers(ref), (E, UNITS[0]), UNITS)):
        assert layer.stateful and layer.name == f"{cell}_{i}" and len(layer.states) == len(spec.state)
        assert [tuple(v.shape) for v in layer.weights] == list(spec.weight_shapes(dim, u).values())
        assert [v.path.rsplit("/", 1)[1] for v in layer.weights] == list(spec.weights)
    state = [tuple(np.zeros((B, u)) for _ in spec.state) for u in UNITS]
    for seed in (1, 2):  # the second window starts from the carried state
        want, state = _reference_model(cell, ref, _ids(seed), state)
        np.testing.assert_allclose(np.asarray(ref(_ids(seed))), want, atol=1e-5)
        for got, expected in zip(get_state(ref), state):
            for a, b in zip(got, expected):
                np.testing.assert_allclose(a, b, atol=1e-5)


# ---------------------------------------------------------------- the fast training layer

@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("cell", CELLS)
def test_fast_layer_same_outputs_and_state_across_calls_and_reset(cell, jit):
    ref, fast = _pair(cell, jit)
    for x in (_ids(1), _ids(2)):  # the second call starts from the state the first left
        np.testing.assert_allclose(np.asarray(fast(x)), np.asarray(ref(x)), atol=1e-5)
        for got, want in zip(get_state(fast), get_state(ref)):
            for a, b in zip(got, want):
                np.testing.assert_allclose(a, b, atol=1e-5)
    carried = np.asarray(fast(_ids(1)))
    reset_state(ref), reset_state(fast)
    assert not any(a.any() for layer in get_state(fast) for a in layer)
    fresh = np.asarray(fast(_ids(1)))
    assert not np.allclose(carried, fresh)
    np.testing.assert_allclose(fresh, np.asarray(ref(_ids(1))), atol=1e-5)


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("cell", CELLS)
def test_fast_layer_gradients_match_autodiff_through_the_stock_layer(cell, jit):
    """d(loss) w.r.t. every weight and the input of a 2-layer stack, over two windows with state carried."""
    import keras
    import tensorflow as tf

    spec = get_cell(cell)

    def stack(kind):  # float inputs, so the gradient w.r.t. the input is defined
        inputs = keras.Input(batch_shape=(B, T, E))
        x = inputs
        for i, u in enumerate(UNITS):
            x = (spec.fast_layer(u, f"{cell}_{i}", jit=jit) if kind == "fast" else spec.keras_layer(u, f"{cell}_{i}"))(x)
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


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("cell", CELLS)
def test_recurrence_gradients_including_initial_and_final_state(cell, jit, precision):
    """dL/d(xp, h0, carries, U[, b_r]) against autodiff of a plain loop, with the loss also on the final state.

    In bf16 the plain loop does the same casts (bf16 operands, result back to float32); the two then
    differ by bf16 rounding (~0.4%), which a wrong gradient (a missing term, a wrong transpose) exceeds.
    """
    import tensorflow as tf

    from chargen.net.recurrence import recurrence_of

    spec, rng = get_cell(cell), np.random.default_rng(5)
    u, t, b = (4, 6, 2) if precision == "fp32" else (8, 6, 3)
    g, k = spec.gates, len(spec.state) - 1
    const = lambda s: tf.constant(rng.normal(0, 0.8, s).astype(np.float32))  # noqa: E731
    xp, h0, rec = const((t, b, g * u)), const((b, u)), const((u, g * u))
    carries = tuple(const((b, u)) for _ in range(k))
    rec_bias = const((g * u,)) if cell == "gru" else None
    w_h, w_last = (tf.constant(rng.normal(size=s).astype(np.float32)) for s in ((t, b, u), (b, u)))

    def product(h, w):
        return h @ w if precision == "fp32" else tf.cast(tf.cast(h, tf.bfloat16) @ tf.cast(w, tf.bfloat16), tf.float32)

    def grads(fn):
        args = [xp, h0, *carries, rec] + ([rec_bias] if rec_bias is not None else [])
        with tf.GradientTape() as tape:
            tape.watch(args)
            hs, last = fn(*args)
            final = last[0] if k else hs[-1]  # the LSTM's final c, the GRU's final h
            loss = tf.reduce_sum(hs * w_h) + tf.reduce_sum(final ** 2 * w_last)
        return [hs, final] + tape.gradient(loss, args)

    def split(args):
        return args[0], args[1], tuple(args[2:2 + k]), args[2 + k], (args[3 + k] if rec_bias is not None else None)

    def plain(*args):
        xp, h0, cs, rec, bias = split(args)
        return plain_tf_loop(cell, xp, h0, cs, rec, bias, product)

    def fast(*args):
        xp, h0, cs, rec, bias = split(args)
        return recurrence_of(cell)(xp, h0, cs, rec, bias, jit=jit, precision=precision)

    for i, (a, b_) in enumerate(zip(grads(plain), grads(fast))):
        assert b_.dtype == tf.float32, i
        if precision == "fp32":
            np.testing.assert_allclose(b_.numpy(), a.numpy(), atol=1e-5, rtol=1e-5, err_msg=str(i))
        else:
            rel = np.abs(b_.numpy() - a.numpy()).max() / max(np.abs(a.numpy()).max(), 1e-12)
            assert rel < 2e-2, f"output {i}: relative error {rel:.2e}"


@pytest.mark.parametrize("cell", CELLS)
def test_the_fast_layer_is_a_drop_in_for_the_stock_layer(cell):
    ref, fast = _pair(cell, True)
    assert [v.path for v in fast.weights] == [v.path for v in ref.weights]  # gru_0/gru_cell/kernel, ...
    assert [tuple(v.shape) for v in fast.weights] == [tuple(v.shape) for v in ref.weights]
    assert [v.path for v in recurrent_layers(fast)[0].states] == [v.path for v in recurrent_layers(ref)[0].states]
    fast.set_weights([w * 0.5 for w in fast.get_weights()])  # fast -> stock: the stock model computes the same
    ref.set_weights(fast.get_weights())
    np.testing.assert_allclose(np.asarray(ref(_ids(1))), np.asarray(fast(_ids(1))), atol=1e-5)
    # the state is not a weight: a batch-1 model of any length takes the same weights and the same state
    one, one_ref = build_model(_cfg(cell), 1, None, kernel="fast"), build_model(_cfg(cell), 1, None)
    for model in (one, one_ref):
        model.set_weights(fast.get_weights())
    assert len(one.weights) == len(fast.weights) == 1 + 3 * 2 + 2
    for t in (3, 5):  # seq_len None: any window length, state carried across them
        x = _ids(t, b=1, t=t)
        np.testing.assert_allclose(np.asarray(one(x)), np.asarray(one_ref(x)), atol=1e-5)
    set_state(one, get_state(one_ref))
    np.testing.assert_allclose(np.asarray(one(_ids(7, 1, 2))), np.asarray(one_ref(_ids(7, 1, 2))), atol=1e-5)
    # the stock cell's initializers: glorot_uniform kernel, orthogonal recurrent kernel, its bias (the LSTM's
    # unit forget bias, the GRU's zeros); not the same draws for a seed (the stock cell draws its seeds itself)
    fresh_ref, fresh_fast = build_model(_cfg(cell), B, T), build_model(_cfg(cell), B, T, kernel="fast")
    for stock, layer, dim, u in zip(recurrent_layers(fresh_ref), recurrent_layers(fresh_fast), (E, UNITS[0]), UNITS):
        for model_layer in (stock, layer):
            kernel, rec, bias = _layer_weights(model_layer)
            limit = np.sqrt(6 / (dim + kernel.shape[1]))
            assert np.abs(kernel).max() <= limit and kernel.std() > 0.4 * limit  # uniform(-limit, limit)
            np.testing.assert_allclose(rec @ rec.T, np.eye(u), atol=1e-5)  # orthonormal rows
        np.testing.assert_array_equal(_layer_weights(layer)[2], _layer_weights(stock)[2])


@pytest.mark.parametrize("cell", CELLS)
def test_wrong_batch_size_is_a_clear_error(cell):
    layer = get_cell(cell).fast_layer(4, f"{cell}_x")
    layer(np.zeros((3, 5, 2), np.float32))
    with pytest.raises(ValueError, match="batch size 3.*batch size 2"):
        layer(np.zeros((2, 5, 2), np.float32))
    with pytest.raises(ValueError, match=f"fast {cell} layer needs a static batch size"):
        get_cell(cell).fast_layer(4, f"{cell}_y").build((None, 5, 2))
    with pytest.raises(ValueError, match="kernel must be"):
        build_model(_cfg(cell), 2, 4, kernel="cudnn")


# ---------------------------------------------------------------- generation: the numpy layer and the TF step

@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("cell", CELLS)
def test_numpy_layer_against_the_float64_reference_whole_and_in_halves(cell, rows):
    spec, rng = get_cell(cell), np.random.default_rng(rows)
    d, u = 6, 9  # odd units: halves of 4 and 5
    kernel, rec, bias = (rng.normal(0, 0.5, s) for s in spec.weight_shapes(d, u).values())
    emb = rng.normal(size=(V, d))
    x = rng.normal(size=(rows, d)).astype(np.float32)
    state = tuple(rng.normal(0, 0.5, (rows, u)).astype(np.float32) for _ in spec.state)
    ids = rng.integers(0, V, rows)
    want_x = reference_step(cell, x, state, kernel, rec, bias)
    want_ids = reference_step(cell, emb[ids], state, kernel, rec, bias)
    by_x, by_id = spec.numpy_layer(kernel, rec, bias), spec.numpy_layer(kernel, rec, bias, embedding=emb)
    assert len(by_x.parts(halves=True)) == 2
    before = [a.copy() for a in (x, *state)]
    for halves in (False, True):
        for got, want in ((by_x.step(x, state, halves), want_x), (by_id.step(ids, state, halves), want_ids)):
            assert len(got) == len(spec.state) and all(a.dtype == np.float32 and a.shape == (rows, u) for a in got)
            for a, b in zip(got, want):
                np.testing.assert_allclose(a, b, atol=1e-5)
    for a, b in zip((x, *state), before):  # pure: the given input and state are not modified
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", CELLS)
def test_tensorflow_step_graph_against_the_numpy_engine_eager_savedmodel_and_tflite(cell, tmp_path):
    """The graph `chargen export` writes (chargen.exporters.step.step_module): each layer's `tf_step`."""
    import tensorflow as tf

    from chargen.exporters.step import SIGNATURE, state_names, step_module
    from chargen.exporters.tflite import load_tflite_step, to_tflite
    from chargen.net.numpy_engine import NumpyEngine

    engine = NumpyEngine.from_weights(_cfg(cell), _perturbed(build_model(_cfg(cell), 1), 5).get_weights())
    module = step_module(engine)
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures={SIGNATURE: module.step.get_concrete_function()})
    (tmp_path / "model.tflite").write_bytes(to_tflite(module))
    names = [n for layer in state_names(engine.cell, len(UNITS)) for n in layer]
    steppers = {"eager": lambda token, **kw: module.step(token, *(kw[n] for n in names)),
                "savedmodel": tf.saved_model.load(str(tmp_path / "saved")).signatures[SIGNATURE],
                "tflite": load_tflite_step(tmp_path / "model.tflite")}
    for how, step in steppers.items():
        state = engine.zero_state(1)
        feed = dict(zip(names, (a for layer in state for a in layer)))
        for t in range(6):
            token = np.array([(5 * t + 2) % V], np.int32)
            got = {k: np.asarray(v) for k, v in step(token=token, **feed).items()}
            logits, state = engine.step(token, state)
            np.testing.assert_allclose(got["logits"], logits, atol=1e-5, err_msg=f"{how}, step {t}")
            for n, a in zip(names, (a for layer in state for a in layer)):
                np.testing.assert_allclose(got[n], a, atol=1e-5, err_msg=f"{how}, {n}, step {t}")
            feed = {n: got[n] for n in names}
