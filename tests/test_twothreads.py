"""The numpy step (gates reordered for speed) and its row-split, two-thread form compute the LSTM exactly."""

import numpy as np
import pytest

from chargen.sampling import NumpyLSTM, make_stepper
from chargen.twothreads import RowHalves


def _weights(units, vocab=11, embed=6, seed=0):
    rng = np.random.default_rng(seed)
    layers, inp = [], embed
    for u in units:
        layers.append((rng.normal(0, 0.4, (inp, 4 * u)).astype(np.float32),
                       rng.normal(0, 0.4, (u, 4 * u)).astype(np.float32),
                       rng.normal(0, 0.4, 4 * u).astype(np.float32)))
        inp = u
    return (rng.normal(0, 1, (vocab, embed)).astype(np.float32), layers,
            rng.normal(0, 1, (units[-1], vocab)).astype(np.float32), rng.normal(0, 1, vocab).astype(np.float32))


def _reference_step(weights, ids, state):
    """The textbook LSTM in Keras's gate order (i, f, c, o), float64, no folding or reordering."""
    emb, layers, dk, db = weights
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    x = emb[ids].astype(np.float64)
    out = []
    for (k, r, b), (h, c) in zip(layers, state):
        u = h.shape[1]
        z = x @ k + h @ r + b
        i, f, g, o = sig(z[:, :u]), sig(z[:, u:2 * u]), np.tanh(z[:, 2 * u:3 * u]), sig(z[:, 3 * u:])
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append((h, c))
        x = h
    return x @ dk + db, out


@pytest.mark.parametrize("units", [(8,), (24, 16), (7, 5, 9)])
@pytest.mark.parametrize("rows", [1, 3, 16])
def test_numpy_step_matches_the_textbook_lstm_over_many_steps(units, rows):
    w = _weights(units)
    lstm = NumpyLSTM(*w)
    rng = np.random.default_rng(1)
    s_ref = s = [(np.zeros((rows, u)), np.zeros((rows, u))) for u in units]
    s = [(h.astype(np.float32), c.astype(np.float32)) for h, c in s]
    for _ in range(40):
        ids = rng.integers(0, 11, rows)
        want, s_ref = _reference_step(w, ids, s_ref)
        got, s = lstm.step(ids, s)
        np.testing.assert_allclose(got, want, atol=2e-5)
    for (h, c), (hr, cr) in zip(s, s_ref):
        np.testing.assert_allclose(h, hr, atol=2e-5)
        np.testing.assert_allclose(c, cr, atol=2e-5)
    assert float(np.abs(s[-1][0]).sum()) > 0


@pytest.mark.parametrize("rows", [2, 5, 16])
def test_row_halves_on_two_threads_match_the_plain_step(rows):
    lstm = NumpyLSTM(*_weights((24, 16)))
    two = make_stepper(lstm, threads=2)
    assert isinstance(two, RowHalves)
    rng = np.random.default_rng(2)
    s2 = s0 = [(np.zeros((rows, u), np.float32), np.zeros((rows, u), np.float32)) for u in (24, 16)]
    for _ in range(30):
        ids = rng.integers(0, 11, rows)
        l2, s2 = two.step(ids, s2)
        l0, s0 = lstm.step(ids, s0)
        np.testing.assert_allclose(l2, l0, atol=2e-5)  # BLAS may round 8-row products differently from 16
    for (h2, c2), (h0, c0) in zip(s2, s0):
        np.testing.assert_allclose(h2, h0, atol=2e-5)
        np.testing.assert_allclose(c2, c0, atol=2e-5)
    again, _ = make_stepper(lstm, threads=2).step(ids, s0)
    np.testing.assert_array_equal(again, two.step(ids, s0)[0])  # and the same bits every time


def test_step_does_not_modify_the_given_state():
    two = make_stepper(NumpyLSTM(*_weights((8, 6))), threads=2)
    for rows in (1, 4):
        state = [(np.full((rows, u), 0.3, np.float32), np.full((rows, u), -0.2, np.float32)) for u in (8, 6)]
        before = [(h.copy(), c.copy()) for h, c in state]
        two.step(np.arange(rows), state)
        for (h, c), (h0, c0) in zip(state, before):
            np.testing.assert_array_equal(h, h0)
            np.testing.assert_array_equal(c, c0)


def test_an_error_in_the_worker_thread_reaches_the_caller():
    two = make_stepper(NumpyLSTM(*_weights((8,))), threads=2)
    zeros = [(np.zeros((4, 8), np.float32), np.zeros((4, 8), np.float32))]
    with pytest.raises(IndexError):  # an id out of range in the second half: the worker's half
        two.step(np.array([0, 1, 2, 99]), zeros)
    logits, _ = two.step(np.arange(4), zeros)
    assert logits.shape == (4, 11)  # the worker survived the error


def test_thread_count_follows_chargen_threads(monkeypatch):
    lstm = NumpyLSTM(*_weights((8,)))
    monkeypatch.setenv("CHARGEN_THREADS", "1")
    assert make_stepper(lstm) is lstm
    monkeypatch.setenv("CHARGEN_THREADS", "2")
    assert isinstance(make_stepper(lstm), RowHalves)
