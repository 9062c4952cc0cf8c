"""The numpy engine (each cell's numpy layer, cut in halves for many rows) computes the cell, and the
same bits on one core or two."""

import numpy as np
import pytest

from cells import CELLS, random_weights, reference_model_step
from cells import zero_state as _zeros
from chargen.blas import blas_threads
from chargen.cores import PERIOD, SETTLE, TRIAL, Chooser, Stepper, step_threads
from chargen.net.numpy_engine import NumpyEngine, run_in_turn


def _weights(units, vocab=11, embed=6, seed=0, lstm_scale=0.4, out_scale=1.0, cell="lstm"):
    """Random weights for NumpyEngine(cell, ...): (embedding, [(kernel, recurrent, bias)], dense kernel, dense bias)."""
    return random_weights(cell, units, vocab, embed, seed, lstm_scale, out_scale)


@pytest.mark.parametrize("units", [(8,), (24, 16), (7, 5, 9)])
@pytest.mark.parametrize("rows", [1, 3, 16])
@pytest.mark.parametrize("cell", CELLS)
def test_numpy_step_matches_the_cells_formulas_over_many_steps(cell, units, rows):
    w = _weights(units, cell=cell)
    engine = NumpyEngine(cell, *w)
    rng = np.random.default_rng(1)
    s_ref = [tuple(a.astype(np.float64) for a in layer) for layer in _zeros(cell, units, rows)]
    s = engine.zero_state(rows)
    for _ in range(40):
        ids = rng.integers(0, 11, rows)
        want, s_ref = reference_model_step(cell, w, ids, s_ref)
        got, s = engine.step(ids, s)
        np.testing.assert_allclose(got, want, atol=2e-5)
    for layer, layer_ref in zip(s, s_ref):
        assert len(layer) == len(layer_ref)
        for a, b in zip(layer, layer_ref):
            np.testing.assert_allclose(a, b, atol=2e-5)
    assert float(np.abs(s[-1][0]).sum()) > 0


def _run(stepper, units, rows, steps, seed=2):
    """Feed a stepper its own greedy picks for `steps` steps; returns the last logits and state."""
    rng = np.random.default_rng(seed)
    state = stepper.zero_state(rows)
    ids = rng.integers(0, 11, rows)
    for _ in range(steps):
        logits, state = stepper.step(ids, state)
        ids = (np.argmax(logits, axis=1) + rng.integers(0, 3, rows)) % 11
    return logits, state


def _same_bits(a, b):
    (la, sa), (lb, sb) = a, b
    return np.array_equal(la, lb) and all(np.array_equal(x, y) for p, q in zip(sa, sb) for x, y in zip(p, q))


@pytest.mark.parametrize("units", [(24, 16), (7, 5, 9)])
@pytest.mark.parametrize("rows", [1, 2, 5, 16])
@pytest.mark.parametrize("cell", CELLS)
def test_one_core_or_two_and_switching_between_them_give_the_same_bits(cell, units, rows):
    lstm = NumpyEngine(cell, *_weights(units, cell=cell))
    steps = 2 * (SETTLE + TRIAL) + 40  # past the first trial of the other choice and the decision after it
    two = Stepper(lstm, cores=2)
    chooser = two.one_row if rows == 1 else two.many_rows
    used = []
    original = chooser.next
    chooser.next = lambda: used.append(original()) or used[-1]
    got = _run(two, units, rows, steps)
    assert _same_bits(got, _run(Stepper(lstm, cores=1), units, rows, steps))
    if rows > 1 or two.blas is not None:
        assert set(used) == {False, True}  # both ways were really used, side by side
    if rows > 1:
        assert two._helper is not None
    plain = _run(lstm, units, rows, steps)  # and the stepper adds nothing to the engine's own step
    assert _same_bits(got, plain)


def test_the_chooser_keeps_the_faster_way_and_notices_when_that_changes():
    chooser = Chooser(True)
    assert chooser.next() is True  # two cores until measured otherwise

    def run(steps, two_takes, one_takes):
        for _ in range(steps):
            two = chooser.next()
            chooser.took(two, two_takes if two else one_takes)

    run(3 * PERIOD, two_takes=3.0, one_takes=1.0)  # the other core is busy: two is slow
    assert chooser.use_two is False
    tried = []
    for _ in range(32 * PERIOD):
        tried.append(chooser.next())
        chooser.took(tried[-1], 3.0 if tried[-1] else 1.0)
    assert chooser.use_two is False
    trials = [sum(tried[k * PERIOD:(k + 1) * PERIOD]) // TRIAL for k in range(32)]
    assert 2 <= sum(trials) <= 5  # it still tries two now and then, less often while two keeps losing
    assert trials[-16:].count(1) == 1  # at most every 16 periods
    run(PERIOD, two_takes=0.5, one_takes=1.0)  # one lucky trial of two is not enough to go back
    assert chooser.use_two is False
    run(20 * PERIOD, two_takes=0.5, one_takes=1.0)  # but a quiet machine is: the next trial plus a few periods
    assert chooser.use_two is True
    never = Chooser(False)
    assert not any(never.next() for _ in range(2 * PERIOD))
    fixed, choices = Chooser(True, adapt=False), []
    for _ in range(2 * PERIOD):
        choices.append(fixed.next())
        fixed.took(choices[-1], 1.0)
    assert all(choices)  # adapt=False never tries one core (for benchmarks)


def test_the_chooser_does_not_time_the_steps_just_after_a_change():
    # OpenBLAS's idle worker spins on after two-thread steps and slows the first one-thread steps
    chooser = Chooser(True)
    since, last = 0, None
    for _ in range(4 * PERIOD):
        two = chooser.next()
        since, last = (since + 1 if two == last else 1), two
        chooser.took(two, 2.0 if two else (50.0 if since <= SETTLE else 1.0))
    assert chooser.use_two is False


class _NoisyWhenTwo:
    """A fake BLAS and an engine whose results change in the last bit on two BLAS threads."""

    def __init__(self, lstm):
        self.lstm, self.threads = lstm, 1

    def get(self):
        return self.threads

    def set(self, n):
        self.threads = n

    def zero_state(self, rows):
        return self.lstm.zero_state(rows)

    def step(self, ids, state, run=run_in_turn):
        logits, state = self.lstm.step(ids, state, run)
        return (np.nextafter(logits, np.inf) if self.threads == 2 else logits), state


def test_one_row_stays_on_one_core_when_two_blas_threads_change_the_bits():
    fake = _NoisyWhenTwo(NumpyEngine("lstm", *_weights((8,))))
    stepper = Stepper(fake, cores=2, blas=fake)
    got = _run(stepper, (8,), 1, 300)
    assert stepper.one_row.two_possible is False and stepper.one_row.use_two is False
    assert _same_bits(got, _run(fake.lstm, (8,), 1, 300))
    assert fake.threads == 1  # and the BLAS setting is put back after every step


def test_step_does_not_modify_the_given_state():
    two = Stepper(NumpyEngine("lstm", *_weights((8, 6))), cores=2)
    for rows in (1, 4):
        state = [(np.full((rows, u), 0.3, np.float32), np.full((rows, u), -0.2, np.float32)) for u in (8, 6)]
        before = [(h.copy(), c.copy()) for h, c in state]
        two.step(np.arange(rows), state)
        for (h, c), (h0, c0) in zip(state, before):
            np.testing.assert_array_equal(h, h0)
            np.testing.assert_array_equal(c, c0)


def test_an_error_in_the_worker_thread_reaches_the_caller():
    two = Stepper(NumpyEngine("lstm", *_weights((8,))), cores=2)

    def cell(k):
        if k == 1:  # the second part runs on the worker thread
            raise IndexError("worker")
        return k

    with pytest.raises(IndexError, match="worker"):
        two._side_by_side(cell, [(0,), (1,)])
    assert two._side_by_side(lambda k: k * 10, [(1,), (2,)]) == [10, 20]  # the worker survived the error
    logits, _ = two.step(np.arange(4), [(np.zeros((4, 8), np.float32), np.zeros((4, 8), np.float32))])
    assert logits.shape == (4, 11)


def test_cores_follow_chargen_threads(monkeypatch):
    lstm = NumpyEngine("lstm", *_weights((8,)))
    monkeypatch.setenv("CHARGEN_THREADS", "1")
    assert step_threads() == 1
    one = Stepper(lstm)
    assert not one.one_row.two_possible and not one.many_rows.two_possible
    monkeypatch.setenv("CHARGEN_THREADS", "2")
    assert step_threads() == 2
    assert Stepper(lstm).many_rows.two_possible


def test_numpys_openblas_thread_count_can_be_set():
    blas_name = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    blas = blas_threads()
    if "openblas" not in blas_name.lower():
        assert blas is None or blas.get() >= 1
        return
    assert blas is not None, f"numpy uses {blas_name} but its thread control was not found"
    before = blas.get()
    try:
        blas.set(2)
        assert blas.get() == 2
        blas.set(1)
        assert blas.get() == 1
    finally:
        blas.set(before)
