"""The serving engine without HTTP: fixed blocks, per-row randomness, priming, rows joining and leaving."""

import time

import numpy as np
import pytest

import chargen
from cells import CELLS, random_weights
from chargen.config import SampleConfig
from chargen.cores import Stepper
from chargen.net.numpy_engine import NumpyEngine
from chargen.sampling import pick
from chargen.serve.batcher import Batcher, RowRandoms
from chargen.serve.jobs import Job
from chargen.serve.priming import CHUNK, Primer
from chargen.serve.requests import GenerateRequest
from chargen.serve.service import engines
from chargen.serve.sessions import Session, Sessions


def _random_engine(cell, units, vocab=60, embed=16, seed=0):
    return NumpyEngine(cell, *random_weights(cell, units, vocab, embed, seed, scale=0.1, out_scale=0.1))


@pytest.fixture(scope="module")
def gen(trained_run):
    return chargen.load(trained_run.run_dir, which="last")


@pytest.fixture(scope="module", params=["fp32", "int8"])
def wide(gen, request, tmp_path_factory, monkeypatch_module):
    """A 2x256 model with random weights: wide enough that OpenBLAS blocks a product by its row count
    (a row's bits then differ between 2 and 4 rows), which the tiny model's products never do; on the
    exact engine and on the int8 one (`chargen serve --precision int8`)."""
    from chargen.config import ModelConfig
    from chargen.generate import Generator
    from chargen.net.model import build_model

    monkeypatch_module.setenv("CHARGEN_CACHE", str(tmp_path_factory.mktemp("int8-cache")))
    cfg = ModelConfig(vocab_size=gen.tokenizer.vocab_size, embed=16, units=(256, 256))
    return Generator(cfg, build_model(cfg, 1).get_weights(), gen.tokenizer, precision=request.param)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.mark.parametrize("units, block, cell", [((24, 16), 4, "lstm"), ((24, 16), 16, "lstm"), ((256, 256), 16, "lstm"),
                                               ((256, 256), 32, "lstm"), ((24, 16), 4, "gru"), ((256, 256), 32, "gru")])
@pytest.mark.parametrize("cores", [1, 2])
def test_a_row_gives_the_same_bits_at_every_position_of_a_block_beside_any_rows(units, block, cell, cores):
    """What makes a seeded text independent of the traffic: blocks of one shape, no arithmetic across rows."""
    engine = Stepper(_random_engine(cell, units), cores=cores)
    rng = np.random.default_rng(1)
    k = len(engine.zero_state(1)[0])  # state tensors per layer
    probe = [tuple(rng.normal(size=u).astype(np.float32) for _ in range(k)) for u in units]
    seen = []
    for position in range(block):
        state = [tuple(rng.normal(size=(block, u)).astype(np.float32) for _ in range(k)) for u in units]
        for arrays, probe_arrays in zip(state, probe):
            for a, p in zip(arrays, probe_arrays):
                a[position] = p
        ids = rng.integers(0, 60, block)
        ids[position] = 7
        logits, new = engine.step(ids, state)
        seen.append([logits[position]] + [a[position] for layer in new for a in layer])
    for row in seen[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(row, seen[0]))


def test_each_row_picks_with_its_own_generator_as_a_single_stream_would():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 40)).astype(np.float32) * 3
    for options in [(0.8, 0, 1.0), (1.3, 5, 1.0), (0.7, 0, 0.9), (0.0, 0, 1.0)]:
        rows = pick(logits, SampleConfig(0, *options), RowRandoms([np.random.default_rng(s) for s in range(6)]))
        alone = [pick(logits[i:i + 1], SampleConfig(0, *options), np.random.default_rng(i))[0] for i in range(6)]
        assert rows.tolist() == alone


def _job(seed="the ", length=80, rng_seed=None, keep=False, **sample):
    request = GenerateRequest(seed=seed, sample=SampleConfig(length=length, rng_seed=rng_seed, **sample), keep=keep)
    job = Job(request)
    job.rng = np.random.default_rng(rng_seed)
    return job


class Engine:
    """A Batcher and Primer on the trained model, stepped by hand (no threads), with rows joining at chosen steps."""

    def __init__(self, gen, block_rows=4, capacity=12, sessions=None):
        self.sessions = sessions or Sessions(10)
        stepping, priming = engines(gen)  # as chargen serve builds them, at the generator's precision
        self.batcher = Batcher(stepping, gen.tokenizer, capacity, block_rows, self.sessions, notify=lambda jobs: None)
        self.primer = Primer(priming, gen.tokenizer, self.batcher)

    def run(self, schedule):
        """schedule: {step: [jobs to add before it]}; steps until every job is done."""
        jobs, step = [j for js in schedule.values() for j in js], 0
        while not all(j.done for j in jobs):
            for job in schedule.get(step, []):
                self.batcher.submit(self.primer.prime(job))
            self.batcher.run_step()
            step += 1
        return ["".join(j.pieces) for j in jobs]


def test_a_seeded_row_gives_the_same_text_whatever_joins_and_leaves_beside_it(wide):
    """Same text, and the same bits of its final state and next-character logits (a flipped pick is rare even
    where the bits differ, so the bits are what is compared)."""
    gen = wide
    engine = Engine(gen)
    alone = _job(rng_seed=5, length=120, temperature=1.0, keep=True)
    engine.run({0: [alone]})
    want = engine.sessions.get(alone.session_id)
    rng = np.random.default_rng(3)
    for trial in range(3):
        schedule = {}
        for _ in range(14):  # others join at random steps with random lengths and options: 1 to 4 blocks
            schedule.setdefault(int(rng.integers(0, 100)), []).append(
                _job(seed=str(rng.choice(["", "row ", "the state of "])), length=int(rng.integers(1, 90)),
                     temperature=float(rng.choice([0.0, 0.5, 1.0])), top_k=int(rng.choice([0, 3]))))
        at = int(rng.integers(0, 40))
        target = _job(rng_seed=5, length=120, temperature=1.0, keep=True)
        schedule.setdefault(at, []).append(target)
        engine = Engine(gen)
        engine.run(schedule)
        got = engine.sessions.get(target.session_id)
        assert "".join(target.pieces) == "".join(alone.pieces), f"trial {trial}, joined at step {at}"
        np.testing.assert_array_equal(got.logits, want.logits)
        for layer, layer_want in zip(got.state, want.state):
            for a, b in zip(layer, layer_want, strict=True):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", CELLS)
def test_served_text_is_the_generators_where_the_arithmetic_agrees(trained_runs, cell):
    """Same options, same rng_seed: the text `chargen sample` gives, where the arithmetic allows.

    Without a seed both read a newline with the same one-row step, then differ only in the products: blocks of
    rows in two halves vs a single row's whole-layer products, equal to ~1e-7, so a pick can flip where two
    choices tie that closely. With a seed, `chargen sample` reads it with Keras and the server with numpy steps.
    The next-character probabilities agree to 1e-5 either way."""
    gen = chargen.load(trained_runs(cell).run_dir, which="last")
    same = {"": 0, "the ": 0}
    for seed_text in same:
        for seed in range(8):
            served = Engine(gen).run({0: [_job(seed=seed_text, rng_seed=seed, length=100, temperature=1.0)]})[0]
            gen.reset()
            same[seed_text] += served == gen.generate(seed_text, 100, temperature=1.0, rng_seed=seed)
    assert min(same.values()) >= 7, same
    gen.reset()
    gen.prime("the ")
    job = Engine(gen).primer.prime(_job(seed="the "))
    np.testing.assert_allclose(_probs(job.logits), _probs(gen.next_logits()), atol=1e-5)
    state = job.state
    batch_state = [tuple(np.repeat(a, 4, 0) for a in layer) for layer in state]
    for ch in "state of each":
        ids = gen.tokenizer.encode(ch).astype(np.int64)
        one, state = gen.stepper.step(ids, state)
        rows, batch_state = Stepper(gen.stepper.engine).step(np.repeat(ids, 4), batch_state)
        np.testing.assert_allclose(_probs(rows[2]), _probs(one[0]), atol=1e-5)


def _probs(logits):
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def test_a_long_seed_is_primed_in_turns_to_the_same_bits_as_at_once(gen, small_text):
    """The priming thread reads CHUNK tokens a turn, round-robin; the state is the one-row steps' over the seed."""
    seed = small_text[:CHUNK * 2 + 7]
    batcher = Engine(gen).batcher
    primer = Primer(Stepper(gen.stepper.engine, cores=1), gen.tokenizer, batcher)
    long, short = _job(seed=seed), _job(seed="row ")
    primer.start()
    primer.submit(long)
    primer.submit(short)
    deadline = time.monotonic() + 60
    while len(batcher.ready) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    primer.close()
    primer.join(10)
    assert list(batcher.ready) == [short, long]  # the short seed did not wait for the whole long one
    state = [(np.zeros((1, u), np.float32), np.zeros((1, u), np.float32)) for u in gen.config.units]
    for i in gen.tokenizer.encode(seed).astype(np.int64):
        logits, state = gen.stepper.step(np.array([i]), state)
    np.testing.assert_array_equal(long.logits, logits[0])
    for (h, c), (gh, gc) in zip(long.state, state):
        np.testing.assert_array_equal(h, gh)
        np.testing.assert_array_equal(c, gc)


def test_a_session_continues_exactly_where_the_text_stopped(gen):
    """Two requests of 60 through a session are one request of 120: state, next distribution and generator go on."""
    whole = Engine(gen).run({0: [_job(rng_seed=9, length=120, temperature=1.0)]})[0]
    engine = Engine(gen)
    first = _job(rng_seed=9, length=60, temperature=1.0, keep=True)
    engine.run({0: [first]})
    saved = engine.sessions.get(first.session_id)
    second = _job(seed="", length=60, temperature=1.0, keep=True)
    second.start, second.rng = (saved.state, saved.logits), saved.new_rng()
    engine.run({0: [second]})
    assert "".join(first.pieces) + "".join(second.pieces) == whole
    assert second.session_id not in (None, first.session_id)  # a new snapshot; the old one stays for branching


def test_rows_leaving_keep_the_rest_dense_and_cancelled_rows_leave_at_once(gen):
    engine = Engine(gen, block_rows=4)
    jobs = [_job(length=1000) for _ in range(9)]
    for job in jobs:
        engine.batcher.submit(engine.primer.prime(job))
    engine.batcher.run_step()
    assert engine.batcher.stats()["active_rows"] == 9 and engine.batcher.stats()["blocks"] == 3
    for job in jobs[:6]:
        job.cancel()
    engine.batcher.run_step()
    assert engine.batcher.stats()["active_rows"] == 3 and engine.batcher.stats()["blocks"] == 1
    assert all(j.finish_reason == "cancelled" for j in jobs[:6]) and not any(j.done for j in jobs[6:])
    assert engine.batcher.jobs == jobs[6:][::-1] or set(engine.batcher.jobs) == set(jobs[6:])


def test_sessions_drop_the_least_recently_used():
    store = Sessions(2)
    s = Session([], np.zeros(3), np.random.default_rng(0).bit_generator.state)
    a, b = store.save(s), store.save(s)
    assert store.get(a) is s  # a is now the most recently used
    c = store.save(s)
    assert store.get(b) is None and store.get(a) is s and store.get(c) is s and len(store) == 2


def test_a_bpe_model_is_served_by_characters(small_text):
    """With BPE a row's piece is a token's text: length counts characters (the last token may run over), as in
    `chargen sample`, and the served text is the Generator's with the same rng_seed."""
    from chargen.bpe import BpeTokenizer
    from chargen.config import ModelConfig
    from chargen.generate import Generator
    from chargen.net.model import build_model

    tok = BpeTokenizer.train(small_text, 40)
    cfg = ModelConfig(vocab_size=tok.vocab_size, embed=8, units=(16,))
    bpe = Generator(cfg, build_model(cfg, 1).get_weights(), tok)
    job = _job(seed="the state", length=50, rng_seed=2, temperature=1.0)
    text = Engine(bpe, block_rows=4).run({0: [job]})[0]
    assert 50 <= len(text) < 50 + max(len(t) for t in tok.tokens) and job.chars == len(text)
    assert text == bpe.generate("the state", 50, temperature=1.0, rng_seed=2)
