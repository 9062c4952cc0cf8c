"""Each cell's maths written directly from its formulas, in float64: what chargen's cells are checked against.

Nothing here comes from chargen.net: the formulas are the ones Keras documents and computes
(keras.layers.LSTM, keras.layers.GRU(reset_after=True)), with Keras's gate order.
"""

import numpy as np

CELLS = ("lstm", "gru")
GATES = {"lstm": 4, "gru": 3}
STATE = {"lstm": ("h", "c"), "gru": ("h",)}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_step(cell: str, x, state, kernel, recurrent_kernel, bias):
    """One step of one layer, float64: x (R, D), state a tuple of (R, u) -> the new state tuple."""
    x, kernel, recurrent_kernel, bias = (np.asarray(a, np.float64) for a in (x, kernel, recurrent_kernel, bias))
    h = np.asarray(state[0], np.float64)
    u = h.shape[1]
    if cell == "lstm":  # gate blocks i, f, c, o
        z = x @ kernel + h @ recurrent_kernel + bias
        i, f, g, o = sigmoid(z[:, :u]), sigmoid(z[:, u:2 * u]), np.tanh(z[:, 2 * u:3 * u]), sigmoid(z[:, 3 * u:])
        c = f * np.asarray(state[1], np.float64) + i * g
        return o * np.tanh(c), c
    xp, m = x @ kernel + bias[0], h @ recurrent_kernel + bias[1]  # gate blocks z, r, h; reset after the product
    z = sigmoid(xp[:, :u] + m[:, :u])
    r = sigmoid(xp[:, u:2 * u] + m[:, u:2 * u])
    hh = np.tanh(xp[:, 2 * u:] + r * m[:, 2 * u:])
    return (z * h + (1 - z) * hh,)


def reference_model_step(cell: str, weights, ids, state):
    """Embedding -> layers -> dense for one token per row, float64. weights: (embedding, [(k, r, b)], dk, db)."""
    emb, layers, dk, db = weights
    x, out = np.asarray(emb, np.float64)[ids], []
    for (k, r, b), s in zip(layers, state):
        out.append(reference_step(cell, x, s, k, r, b))
        x = out[-1][0]
    return x @ dk + db, out


def random_weights(cell: str, units, vocab=11, embed=6, seed=0, scale=0.4, out_scale=1.0):
    """Random float32 arrays (embedding, [(kernel, recurrent_kernel, bias)], dense kernel, dense bias), biases
    included (a fresh layer's are zero or constant, which would hide bias mistakes)."""
    rng = np.random.default_rng(seed)
    g = GATES[cell]
    layers, inp = [], embed
    for u in units:
        bias = (g * u,) if cell == "lstm" else (2, g * u)
        layers.append(tuple(rng.normal(0, scale, s).astype(np.float32) for s in ((inp, g * u), (u, g * u), bias)))
        inp = u
    return (rng.normal(0, 1, (vocab, embed)).astype(np.float32), layers,
            rng.normal(0, out_scale, (units[-1], vocab)).astype(np.float32),
            rng.normal(0, out_scale, vocab).astype(np.float32))


def zero_state(cell: str, units, rows: int):
    return [tuple(np.zeros((rows, u), np.float32) for _ in STATE[cell]) for u in units]


def plain_tf_loop(cell: str, xp, h0, carries, rec, rec_bias=None, product=None):
    """The recurrence over time-major xp (T, B, Gu) as a plain TensorFlow loop that autodiff differentiates.

    Returns (hs (T, B, u), final carries). `product(h, rec)` is h @ rec unless given (bf16 casts).
    """
    import tensorflow as tf

    product = product or (lambda h, w: h @ w)
    h, carries, hs = h0, tuple(carries), []
    for k in range(xp.shape[0]):
        m = product(h, rec) + (0.0 if rec_bias is None else rec_bias)
        if cell == "lstm":
            zi, zf, zg, zo = tf.split(xp[k] + m, 4, axis=1)
            c = tf.sigmoid(zf) * carries[0] + tf.sigmoid(zi) * tf.tanh(zg)
            h, carries = tf.sigmoid(zo) * tf.tanh(c), (c,)
        else:
            xz, xr, xh = tf.split(xp[k], 3, axis=1)
            mz, mr, mh = tf.split(m, 3, axis=1)
            z, r = tf.sigmoid(xz + mz), tf.sigmoid(xr + mr)
            h = z * h + (1 - z) * tf.tanh(xh + r * mh)
        hs.append(h)
    return tf.stack(hs), carries
