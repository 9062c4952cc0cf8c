"""The two-thread numpy step must compute exactly what the one-thread step computes."""

import numpy as np
import pytest

from chargen.sampling import NumpyLSTM, make_stepper
from chargen.twothreads import TwoThreadLSTM


def _lstm(units, vocab=11, embed=6, seed=0):
    rng = np.random.default_rng(seed)
    layers, inp = [], embed
    for u in units:
        layers.append((rng.normal(0, 0.4, (inp, 4 * u)).astype(np.float32),
                       rng.normal(0, 0.4, (u, 4 * u)).astype(np.float32),
                       rng.normal(0, 0.4, 4 * u).astype(np.float32)))
        inp = u
    return NumpyLSTM(rng.normal(0, 1, (vocab, embed)).astype(np.float32), layers,
                     rng.normal(0, 1, (units[-1], vocab)).astype(np.float32), rng.normal(0, 1, vocab).astype(np.float32))


@pytest.mark.parametrize("units", [(8,), (24, 16), (7, 5, 9)])
@pytest.mark.parametrize("rows", [1, 3, 16])
def test_two_threads_match_one_over_many_steps(units, rows):
    one = _lstm(units)
    two = make_stepper(one, threads=2)
    assert isinstance(two, TwoThreadLSTM)
    rng = np.random.default_rng(1)
    s1 = s2 = [(np.zeros((rows, u), np.float32), np.zeros((rows, u), np.float32)) for u in units]
    for _ in range(40):
        ids = rng.integers(0, 11, rows)
        l1, s1 = one.step(ids, s1)
        l2, s2 = two.step(ids, s2)
        np.testing.assert_allclose(l1, l2, atol=2e-5)  # BLAS may round the half-width products differently
    for (h1, c1), (h2, c2) in zip(s1, s2):
        np.testing.assert_allclose(h1, h2, atol=2e-5)
        np.testing.assert_allclose(c1, c2, atol=2e-5)
    assert float(np.abs(s1[-1][0]).sum()) > 0


def test_step_does_not_modify_the_given_state():
    two = make_stepper(_lstm((8, 6)), threads=2)
    state = [(np.full((2, u), 0.3, np.float32), np.full((2, u), -0.2, np.float32)) for u in (8, 6)]
    before = [(h.copy(), c.copy()) for h, c in state]
    two.step(np.array([1, 2]), state)
    for (h, c), (h0, c0) in zip(state, before):
        np.testing.assert_array_equal(h, h0)
        np.testing.assert_array_equal(c, c0)


def test_an_error_in_the_worker_thread_reaches_the_caller():
    two = make_stepper(_lstm((8,)), threads=2)
    bad = [(np.zeros((1, 8), np.float32), np.zeros((2, 8), np.float32))]  # c has the wrong row count
    with pytest.raises(ValueError):
        two.step(np.array([0]), bad)
    logits, _ = two.step(np.array([0]), [(np.zeros((1, 8), np.float32), np.zeros((1, 8), np.float32))])
    assert logits.shape == (1, 11)  # the worker survived the error


def test_one_thread_or_a_one_unit_layer_keeps_the_plain_step(monkeypatch):
    lstm = _lstm((8,))
    assert make_stepper(lstm, threads=1) is lstm
    assert make_stepper(_lstm((1, 8)), threads=2).__class__ is NumpyLSTM
    monkeypatch.setenv("CHARGEN_THREADS", "1")
    assert make_stepper(lstm) is lstm
