import numpy as np
import pytest

import chargen
from cells import CELLS
from chargen.errors import ConfigError, StateError, VocabularyError
from chargen.net.model import build_model, reset_state
from chargen.config import SampleConfig
from chargen.sampling import pick


def _softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(params=CELLS)
def gen(trained_runs, request):
    """The Generator of each cell's tiny trained run."""
    return chargen.load(trained_runs(request.param).run_dir, which="last")


def test_batch1_copy_matches_training_model_row0(gen, small_text):
    """Primed with a text, the sampler predicts what the training model predicts in row 0 from zero state."""
    train_cfg = gen.config
    t = 16
    big = build_model(train_cfg, batch_size=4, seq_len=t)
    big.set_weights(gen.model.get_weights())
    ids = gen.tokenizer.encode(small_text[: 3 * t]).astype(np.int32)
    rng = np.random.default_rng(1)
    reset_state(big)
    for k in range(3):  # three consecutive windows: state is carried in the training model too
        x = rng.integers(0, train_cfg.vocab_size, size=(4, t)).astype(np.int32)
        x[0] = ids[k * t:(k + 1) * t]
        want = _softmax(np.asarray(big(x))[0, -1])
    gen.reset()
    got = _softmax(gen.prime(small_text[: 3 * t]))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_numpy_steps_match_keras(gen, small_text):
    text = small_text[:40]
    gen.reset()
    keras_logits = gen.prime(text)
    gen.reset()
    gen.prime(text[:10])
    for ch in text[10:]:
        logits, gen._state = gen.stepper.step(gen.tokenizer.encode(ch).astype(np.int64), gen._state)
    np.testing.assert_allclose(_softmax(logits[0]), _softmax(keras_logits), atol=1e-5)


def test_stream_is_deterministic_with_a_seed(gen):
    a = gen.generate("the ", 60, temperature=1.0, rng_seed=7)
    gen.reset()
    b = gen.generate("the ", 60, temperature=1.0, rng_seed=7)
    gen.reset()
    c = gen.generate("the ", 60, temperature=1.0, rng_seed=8)
    assert a == b and len(a) == 60
    assert a != c
    assert set(a) <= set(gen.tokenizer.chars)


def test_state_api(gen):
    gen.reset()
    gen.prime("the state")
    saved = gen.state
    k = len(gen.cell.state)  # the LSTM's (h, c), the GRU's (h,)
    assert [tuple(a.shape for a in layer) for layer in saved] == [((1, 24),) * k, ((1, 16),) * k]
    first = gen.generate("", 30, temperature=0)
    gen.set_state(saved)
    assert gen.generate("", 30, temperature=0) != "" and gen.state is not saved
    gen.set_state(saved)
    gen._logits = None
    gen.prime("")  # an empty seed keeps the state
    with pytest.raises(StateError, match=r"\(1, 24\)"):
        gen.set_state([(np.zeros((4, 24), np.float32),) * k, saved[1]])
    with pytest.raises(StateError, match=f"must be a tuple .* of {k} array"):
        gen.set_state([saved[0] + saved[0][:1], saved[1]])  # one array too many
    with pytest.raises(StateError, match="expected 2 layers"):
        gen.set_state(saved[:1])
    gen.reset()
    assert all(np.abs(a).sum() == 0 for layer in gen.state for a in layer)
    assert len(first) == 30


def test_unknown_seed_characters_are_named_or_skipped(gen):
    with pytest.raises(VocabularyError, match=r"'Q'.*--unknown skip"):
        gen.generate("Qthe", 5)
    assert len(gen.generate("Qthe", 5, unknown="skip")) == 5


def test_bad_sampling_options(gen):
    for bad in (dict(temperature=-1), dict(top_k=-1), dict(top_p=0), dict(top_p=1.5), dict(length=-1)):
        with pytest.raises(ConfigError):
            gen.generate("the", **{"length": 5, **bad})


def test_pick_respects_top_k_and_top_p():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    assert pick(logits, SampleConfig(temperature=0), rng)[0] == 0
    seen_k = {int(pick(logits, SampleConfig(temperature=1.0, top_k=2), rng)[0]) for _ in range(300)}
    assert seen_k == {0, 1}
    seen_p = {int(pick(logits, SampleConfig(temperature=1.0, top_p=0.75), rng)[0]) for _ in range(300)}
    assert seen_p == {0, 1}  # 0.5 alone is short of 0.75; 0.5 + 0.3 reaches it
    seen_all = {int(pick(logits, SampleConfig(temperature=1.0), rng)[0]) for _ in range(2000)}
    assert seen_all == {0, 1, 2, 3}


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_one_row_pick_is_the_rows_pick_and_follows_the_distribution(temperature):
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05, 1e-30]]))
    a, b = np.random.default_rng(4), np.random.default_rng(4)
    options = SampleConfig(temperature=temperature)
    one = [int(pick(logits, options, a)[0]) for _ in range(4000)]  # the one-row path
    rows = [int(pick(np.repeat(logits, 2, 0), options, b)[0]) for _ in range(4000)]  # the rows' path
    p = np.exp(logits[0] / temperature) / np.exp(logits[0] / temperature).sum()
    for picks in (one, rows):
        freq = np.bincount(picks, minlength=5) / len(picks)
        np.testing.assert_allclose(freq, p, atol=0.03)
    c, d = np.random.default_rng(9), np.random.default_rng(9)
    for _ in range(2000):  # same draw -> same character as the general formula: count of cumulative mass below u
        got = pick(logits, SampleConfig(temperature=temperature), c)
        cum = np.cumsum(np.exp(logits[0] / temperature - (logits[0] / temperature).max()))
        assert got.shape == (1,) and got[0] == min(int((cum < d.random() * cum[-1]).sum()), 4)


def test_stream_many_rows_are_independent_samples_of_the_same_seed(gen):
    gen.reset()
    gen.prime("each ")
    before = gen.state
    steps = list(gen.stream_many("the ", 5, 40, temperature=1.0, rng_seed=2))
    assert len(steps) == 40 and all(len(s) == 5 for s in steps)
    samples = ["".join(s[i] for s in steps) for i in range(5)]
    assert len(set(samples)) > 1  # different draws per row
    for layer_before, layer_after in zip(before, gen.state):  # the generator's own state is untouched
        for a, b in zip(layer_before, layer_after):
            np.testing.assert_array_equal(a, b)
    # greedy: every row is the same text, and it is what a single stream gives from the same state
    greedy = list(gen.stream_many("the ", 3, 25, temperature=0))
    assert all(len(set(s)) == 1 for s in greedy)
    assert "".join(s[0] for s in greedy) == gen.generate("the ", 25, temperature=0)
    with pytest.raises(ConfigError, match="num_samples must be a positive integer"):
        next(gen.stream_many("the ", 0, 5))


@pytest.mark.parametrize("call", [
    lambda root: chargen.load(root=root, which="newest"),
    lambda root: chargen.export(root=root, which="newest"),
    lambda root: chargen.evaluate("some text to score", root=root, which="newest"),
])
def test_which_must_be_best_or_last_before_anything_is_read(tmp_path, call):
    with pytest.raises(ConfigError, match="^which must be 'best' or 'last', got 'newest'"):
        call(tmp_path / "no-such-root")
