"""numpy's BLAS threads: found through threadpoolctl where it is OpenBLAS, and one core, same text, where not."""

import threading
from types import SimpleNamespace

import numpy as np
import pytest

import chargen
from chargen import blas


@pytest.fixture
def fresh_discovery():
    """blas_threads() looks again now, and the next test gets the real answer back."""
    blas.blas_threads.cache_clear()
    yield
    blas.blas_threads.cache_clear()


def _numpy_blas() -> str:
    return np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"].lower()


def test_the_library_found_is_the_openblas_numpy_loaded(fresh_discovery):
    from threadpoolctl import threadpool_info

    control = blas.blas_threads()
    if "openblas" not in _numpy_blas():
        pytest.skip(f"numpy here uses {_numpy_blas()}, not OpenBLAS")  # its own test below covers None
    loaded = [i["filepath"] for i in threadpool_info() if i["internal_api"] == "openblas"]
    assert control is not None and control.path in loaded
    before = control.get()
    try:
        for n in (2, 1):
            control.set(n)
            assert control.get() == n == next(i["num_threads"] for i in threadpool_info() if i["filepath"] == control.path)
    finally:
        control.set(before)


@pytest.mark.parametrize("found", [
    [],  # no BLAS found at all (a numpy without one, or threadpoolctl sees nothing)
    [SimpleNamespace(internal_api="mkl", filepath="/x/libmkl_rt.so", threading_layer="intel")],
    [SimpleNamespace(internal_api="blis", filepath="/x/libblis.so")],
    [SimpleNamespace(internal_api="openblas", filepath="/x/libopenblas.so", threading_layer="openmp")],
])
def test_anything_but_a_pthreads_openblas_gives_no_control(fresh_discovery, monkeypatch, found):
    monkeypatch.setattr(blas, "_loaded_blas", lambda: found)
    assert blas.blas_threads() is None


def test_a_failing_discovery_gives_no_control(fresh_discovery, monkeypatch):
    def broken():
        raise OSError("cannot inspect this process")

    monkeypatch.setattr(blas, "_loaded_blas", broken)
    assert blas.blas_threads() is None


def _texts(gen) -> list[str]:
    one = gen.generate("the ", 300, rng_seed=1)
    many = ["".join(pieces) for pieces in zip(*gen.stream_many("the ", 4, 300, rng_seed=2))]
    return [one, *many]


def _step_threads() -> set:
    return {t for t in threading.enumerate() if t.name == "chargen-step"}


def test_without_blas_control_the_generator_runs_on_one_core_and_gives_the_same_text(
        trained_run, fresh_discovery, monkeypatch):
    monkeypatch.setenv("CHARGEN_THREADS", "2")  # two cores wanted
    controlled = chargen.load(trained_run.run_dir)
    if controlled.stepper.blas is None:
        pytest.skip("no OpenBLAS control here: the comparison needs both ways")
    assert controlled.stepper.one_row.two_possible or controlled.stepper.many_rows.two_possible
    expected = _texts(controlled)

    monkeypatch.setattr(blas, "_loaded_blas", lambda: [])  # as on a numpy with Accelerate, or no BLAS found
    blas.blas_threads.cache_clear()
    before = _step_threads()
    alone = chargen.load(trained_run.run_dir)
    assert alone.stepper.blas is None
    assert not alone.stepper.one_row.two_possible and not alone.stepper.many_rows.two_possible
    assert _texts(alone) == expected
    assert not _step_threads() - before  # no helper thread was started for it
