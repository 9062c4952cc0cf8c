import numpy as np
import pytest

from chargen.errors import CorpusError
from chargen.streams import Streams, split


@pytest.mark.parametrize("n, b, t", [(1000, 4, 7), (1001, 3, 10), (64, 2, 5)])
def test_rows_continue_exactly_across_batches(n, b, t):
    ids = np.arange(n)
    s = Streams.from_ids(ids, b, t)
    per = n // b
    assert s.num_batches == (per - 1) // t
    for k in range(s.num_batches):
        x, y = s.batch(k)
        assert x.shape == y.shape == (b, t)
        np.testing.assert_array_equal(y, x + 1)  # targets are inputs shifted by one
        for i in range(b):
            assert x[i, 0] == i * per + k * t  # stream i is slice i of the book
        if k + 1 < s.num_batches:
            nxt, _ = s.batch(k + 1)
            np.testing.assert_array_equal(nxt[:, 0], x[:, -1] + 1)  # row i of k+1 continues row i of k


def test_batches_are_views_not_copies():
    ids = np.arange(10_000, dtype=np.uint16)
    s = Streams.from_ids(ids, 8, 16)
    x, _ = s.batch(3)
    assert np.shares_memory(x, ids)


def test_split_is_head_and_contiguous_tail():
    ids = np.arange(100)
    tr, va = split(ids, 0.1)
    np.testing.assert_array_equal(tr, np.arange(90))
    np.testing.assert_array_equal(va, np.arange(90, 100))
    tr, va = split(ids, 0.0)
    assert len(tr) == 100 and len(va) == 0


def test_too_short_says_how_long_and_which_flags():
    with pytest.raises(CorpusError, match=r"at least 4,100 .*--batch-size or --seq-len"):
        Streams.from_ids(np.arange(1000), 4, 1024)
