"""The same bits on one core or two, where the second core really works, every step compared.

At 2x512 OpenBLAS splits a one-row step's products over its threads (at the tiny sizes of
test_cores.py it would not bother), and many rows are cut into halves run on the Stepper's
helper thread. Both steppers here are pinned (adapt=False never tries one core; cores=1 never
tries two), so neither depends on how busy the machine is, and every step's logits and state
are compared, so a wrong step cannot wash out before the end. That the second core did work is
read from the kernel's per-thread CPU time.
"""

import os
import threading

import numpy as np
import pytest

from chargen.blas import blas_threads
from chargen.cores import Stepper
from chargen.net.numpy_engine import NumpyEngine

from test_cores import _weights as _random_weights

VOCAB, EMBED = 96, 64


def _weights(units):
    # small weights: at 512 units the gates stay off their flat ends, where a last-bit
    # difference in a pre-activation would round away
    return _random_weights(units, VOCAB, EMBED, lstm_scale=0.1, out_scale=0.3)


def _cpu_ns() -> dict[int, int]:
    """CPU time so far of each thread of this process (Linux: /proc/self/task/TID/schedstat)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def _lockstep(a, b, units, rows, steps):
    """Step `a` and `b` on the same ids; every step's logits and state must be the same bits."""
    rng = np.random.default_rng(3)
    sa = sb = [(np.zeros((rows, u), np.float32), np.zeros((rows, u), np.float32)) for u in units]
    ids = rng.integers(0, VOCAB, rows)
    for k in range(steps):
        la, sa = a.step(ids, sa)
        lb, sb = b.step(ids, sb)
        assert np.array_equal(la, lb), f"logits differ at step {k}"
        for i, ((ha, ca), (hb, cb)) in enumerate(zip(sa, sb)):
            assert np.array_equal(ha, hb) and np.array_equal(ca, cb), f"layer {i} state differs at step {k}"
        ids = (np.argmax(la, axis=1) + rng.integers(0, 3, rows)) % VOCAB
    assert float(np.abs(sa[-1][0]).sum()) > 0


def _openblas():
    name = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    blas = blas_threads()
    if "openblas" not in name.lower():
        pytest.skip(f"numpy's BLAS is {name}, not OpenBLAS: its thread count is not chargen's to set")
    assert blas is not None, f"numpy uses {name} but its thread control was not found"
    return blas


def test_numpys_blas_runs_on_the_thread_count_conftest_sets():
    """conftest sets OPENBLAS_NUM_THREADS before numpy is imported; OpenBLAS itself must report it."""
    blas = _openblas()
    assert os.environ.get("OPENBLAS_NUM_THREADS") == "1"
    assert blas.get() == 1


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="per-thread CPU time is read from Linux's /proc")
def test_one_row_on_two_openblas_threads_gives_the_bits_of_one_thread():
    blas = _openblas()
    units = (512, 512)
    lstm = NumpyEngine("lstm", *_weights(units))
    state = [(np.full((1, u), 0.1, np.float32), np.zeros((1, u), np.float32)) for u in units]
    before = blas.get()
    try:  # what the library itself does: one step on one thread and on two
        blas.set(1)
        one_thread = lstm.step(np.array([5]), state)
        blas.set(2)
        two_threads = lstm.step(np.array([5]), state)
    finally:
        blas.set(before)
    library_agrees = np.array_equal(one_thread[0], two_threads[0]) and all(
        np.array_equal(x, y) for p, q in zip(one_thread[1], two_threads[1]) for x, y in zip(p, q))

    two, one = Stepper(lstm, cores=2, adapt=False), Stepper(lstm, cores=1)
    cpu = _cpu_ns()
    _lockstep(two, one, units, rows=1, steps=300)
    spent = _cpu_ns()
    assert two.one_row.two_possible == library_agrees  # the Stepper's own check saw what the library does
    if not library_agrees:
        pytest.skip("OpenBLAS's two threads change a one-row step's bits on this machine, so the Stepper keeps "
                    "one row on one core (checked just above)")
    assert two.one_row.use_two and blas.get() == before  # it stepped on two threads, and put the count back
    me = threading.get_native_id()
    others = {tid: ns - cpu.get(tid, 0) for tid, ns in spent.items() if tid != me}
    assert max(others.values()) > 2e6, others  # an OpenBLAS worker did milliseconds of the products


@pytest.mark.parametrize("units", [(512, 512), (7, 5, 9)])  # (7, 5, 9): halves of unequal size
@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="per-thread CPU time is read from Linux's /proc")
def test_many_rows_in_halves_side_by_side_give_the_bits_of_one_core(units):
    lstm = NumpyEngine("lstm", *_weights(units))
    two, one = Stepper(lstm, cores=2, adapt=False), Stepper(lstm, cores=1)
    _lockstep(two, one, units, rows=16, steps=20)  # starts the helper thread
    helper = two._helper._thread.native_id
    cpu = _cpu_ns()
    _lockstep(two, one, units, rows=16, steps=60 if units[0] == 512 else 300)
    _lockstep(two, lstm, units, rows=16, steps=20)  # and the Stepper adds nothing to the LSTM's own step
    assert _cpu_ns()[helper] - cpu[helper] > 1e6  # the helper thread computed its halves: a millisecond and more
