"""Library calls with wrongly typed arguments (issue #11 item 10): a TypeError or ChargenError naming the
argument, raised when the function is called and before any work (nothing read, built or written)."""

import numpy as np
import pytest

import chargen
from chargen import trainer as train_mod
from chargen.errors import ConfigError, StateError

from conftest import TINY


@pytest.fixture()
def no_work(monkeypatch):
    def work(*a, **k):
        raise AssertionError("work started")

    for name in ("read_text", "_Loop", "RunLock"):
        monkeypatch.setattr(train_mod, name, work, raising=False)


@pytest.mark.parametrize("call, error, needle", [
    (lambda book, root: chargen.train(123, root=root), TypeError, "corpus must be a path"),
    (lambda book, root: chargen.train(book, root=root, callbacks=None), TypeError, "callbacks must be a list"),
    (lambda book, root: chargen.train(book, root=root, callbacks=[1]), TypeError, "neither callable"),
    (lambda book, root: chargen.train(book, root=root, name=5), TypeError, "name must be a str"),
    (lambda book, root: chargen.train(book, root=5), TypeError, "root must be a folder"),
    (lambda book, root: chargen.train(book, root=root, resume="yes"), TypeError, "resume must be True or False"),
    (lambda book, root: chargen.train(book, root=root, progress="no"), TypeError, "progress must be"),
    (lambda book, root: chargen.train(book, root=root, log="x"), TypeError, "log must be a function"),
    (lambda book, root: chargen.train(book, root=root, epochs="3"), ConfigError, "^epochs must be a positive integer"),
    (lambda book, root: chargen.train(book, root=root, units="24"), ConfigError, "^units must be a non-empty list"),
    (lambda book, root: chargen.train(book, root=root, lr=float("nan")), ConfigError, "^lr must be a positive number"),
])
def test_train_refuses_wrong_arguments_before_any_work(tmp_path, no_work, call, error, needle):
    book = tmp_path / "book.txt"
    book.write_text("some text\n")
    with pytest.raises(error, match=needle):
        call(book, tmp_path / "ck")
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("call, needle", [
    (lambda run: chargen.load(123), "checkpoint must be a run name, a folder"),
    (lambda run: chargen.load(run, root=5), "root must be a folder"),
    (lambda run: chargen.evaluate(123, run), "text_or_path must be a text"),
    (lambda run: chargen.evaluate("the text", 4.5), "checkpoint must be a run name, a folder"),
    (lambda run: chargen.export(run, out=5), "out must be a folder"),
    (lambda run: chargen.history(["book"]), "checkpoint must be a run name, a folder"),
])
def test_loading_functions_refuse_wrong_types(trained_run, call, needle):
    with pytest.raises(TypeError, match=needle):
        call(trained_run.run_dir)


@pytest.fixture(scope="module")
def gen(trained_run):
    return chargen.load(trained_run.run_dir)


def test_generator_arguments_are_checked_when_called(gen):
    gen.reset()
    gen.prime("the ")
    before = gen.state
    with pytest.raises(TypeError, match="seed must be a str"):
        gen.stream(None)  # raised by the call itself, before the first piece is asked for
    with pytest.raises(TypeError, match="seed must be a str"):
        gen.stream_many(None, 2)
    with pytest.raises(ConfigError, match="^temperature must be >= 0"):
        gen.stream("the", temperature=-1)
    with pytest.raises(ConfigError, match="^unknown must be 'error' or 'skip'"):
        gen.stream("the", unknown="drop")
    with pytest.raises(TypeError, match="text must be a str"):
        gen.prime(b"the")
    for a, b in zip(before, gen.state):
        np.testing.assert_array_equal(a, b)  # nothing moved


def test_set_state_refuses_ragged_lists_and_values_beyond_float32(gen):
    units = list(TINY["units"])
    ragged = [([[0.0] * units[0], [0.0] * 3], np.zeros((1, units[0]))), (np.zeros((1, 16)),) * 2]
    with pytest.raises(StateError, match="not a rectangular array"):
        gen.set_state(ragged)
    huge = [(np.full((1, u), 1e300), np.zeros((1, u))) for u in units]  # float64, Inf in float32
    with pytest.raises(StateError, match="beyond float32's range"):
        gen.set_state(huge)
    fine = [(np.full((1, u), 0.5), np.zeros((1, u))) for u in units]  # float64 within range: cast
    gen.set_state(fine)
    assert gen.state[0][0].dtype == np.float32


def test_sampling_options_travel_whole_or_one_by_one_not_both(trained_run):
    """`sample=SampleConfig(...)` is the same as its options given one by one; both at once is refused."""
    from chargen import SampleConfig

    gen = chargen.load(trained_run.run_dir, which="last")
    whole = SampleConfig(length=30, temperature=1.3, top_k=5, top_p=0.9, rng_seed=4)
    gen.reset()
    text = gen.generate("the ", sample=whole)
    gen.reset()
    assert len(text) == 30 and text == gen.generate("the ", 30, temperature=1.3, top_k=5, top_p=0.9, rng_seed=4)
    with pytest.raises(TypeError, match="not both: temperature given with sample"):
        gen.stream("the ", temperature=0.5, sample=whole)
    with pytest.raises(TypeError, match="sample must be a chargen.SampleConfig, got dict"):
        gen.stream_many("the ", 2, sample={"length": 3})
    with pytest.raises(ConfigError, match="top_p must be in"):
        gen.stream("the ", sample=SampleConfig(top_p=0))


def test_an_unknown_export_format_names_the_argument_not_the_flag(trained_run, tmp_path):
    with pytest.raises(ConfigError, match=r"^format must be one of .*got 'zip'") as caught:
        chargen.export(trained_run.run_dir, out=tmp_path / "out", format="zip")
    assert caught.value.arguments == ("format",) and not (tmp_path / "out").exists()
