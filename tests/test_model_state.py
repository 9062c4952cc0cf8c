"""Stateful semantics for every cell, in the style of keras's lstm_test.py::test_statefulness."""

import numpy as np
import pytest

from cells import CELLS, STATE
from chargen.config import ModelConfig
from chargen.errors import StateError
from chargen.net.model import build_model, get_state, recurrent_layers, reset_state, set_state

pytestmark = pytest.mark.parametrize("cell", CELLS)


def _cfg(cell):
    return ModelConfig(vocab_size=11, embed=4, units=(6, 5), cell=cell)


def _ids(b, t, seed=0):
    return np.random.default_rng(seed).integers(0, 11, size=(b, t)).astype(np.int32)


def test_state_is_per_row_carried_and_reset(cell):
    m = build_model(_cfg(cell), batch_size=3, seq_len=4)
    x = _ids(3, 4)
    first = np.asarray(m(x))
    second = np.asarray(m(x))  # starts from the state the first call left
    assert not np.allclose(first, second)
    reset_state(m)
    np.testing.assert_allclose(np.asarray(m(x)), first, atol=1e-6)
    # one state per row of the batch, per layer: (h, c) for the LSTM, (h,) for the GRU
    k = len(STATE[cell])
    assert [tuple(a.shape for a in layer) for layer in get_state(m)] == [((3, 6),) * k, ((3, 5),) * k]


def test_rows_are_independent(cell):
    m = build_model(_cfg(cell), batch_size=2, seq_len=4)
    x = _ids(2, 4)
    out = np.asarray(m(x))
    reset_state(m)
    x2 = x.copy()
    x2[1] = (x2[1] + 1) % 11  # change row 1 only
    out2 = np.asarray(m(x2))
    np.testing.assert_allclose(out2[0], out[0], atol=1e-6)
    assert not np.allclose(out2[1], out[1])


def test_weights_exclude_state_so_copies_across_batch_sizes_work(cell):
    big = build_model(_cfg(cell), batch_size=4, seq_len=4)
    big(_ids(4, 4))
    small = build_model(_cfg(cell), batch_size=1, seq_len=None)
    small.set_weights(big.get_weights())
    assert len(big.get_weights()) == 1 + 3 * 2 + 2  # embedding, 2 x (kernel, recurrent, bias), dense
    assert all(np.abs(a).sum() == 0 for layer in get_state(small) for a in layer)


def test_set_state_round_trip_and_refusals(cell):
    m = build_model(_cfg(cell), batch_size=2, seq_len=3)
    m(_ids(2, 3))
    saved = get_state(m)
    out = np.asarray(m(_ids(2, 3, 1)))
    set_state(m, saved)
    np.testing.assert_allclose(np.asarray(m(_ids(2, 3, 1))), out, atol=1e-6)
    k = len(STATE[cell])
    good = [(np.zeros((2, 6), np.float32),) * k, (np.zeros((2, 5), np.float32),) * k]
    bad_cases = {
        "layers": good[:1],
        "shape": [(np.zeros((1, 6), np.float32),) * k, good[1]],  # would broadcast in a careless copy
        "dtype": [(np.zeros((2, 6), np.int32),) * k, good[1]],
        "NaN": [(np.full((2, 6), np.nan, np.float32),) * k, good[1]],
        "tuple": [(np.zeros((2, 6), np.float32),) * (k + 1), good[1]],  # one array too many for the cell
    }
    for what, bad in bad_cases.items():
        with pytest.raises(StateError, match=r"expected 2 layers|NaN") as err:
            set_state(m, bad)
        assert what in str(err.value) or what == "layers"
    assert len(recurrent_layers(m)) == 2
