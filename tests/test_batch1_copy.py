"""The Generator's batch-1 copy predicts what the model training runs predicts, on the training streams.

For each cell. The reference is the training-shaped model: the fast CPU training kernel, B rows, T columns
per call, the checkpoint's own arrays read from model.safetensors (not through the Generator), fed
batch after batch of the training streams from zero state, so row 0's state is carried across
batch boundaries exactly as in training. The Generator (chargen.load) is primed with the same
prefix of row 0 in one call, in pieces (each piece continuing from the state the last one left)
and one token at a time through its numpy step.
"""

import numpy as np
import pytest

import chargen
from cells import CELLS
from chargen import checkpoint as ckpt
from chargen.net.model import build_model, reset_state
from chargen.streams import Streams, split

BATCHES = 3


def _softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module", params=CELLS)
def trained_run(trained_runs, request):
    return trained_runs(request.param)


@pytest.fixture(scope="module")
def training_view(trained_run, small_text):
    """(row 0's ids, row 0's next-token probabilities after each of them, T) from the training-shaped model."""
    snap = ckpt.read_snapshot(ckpt.snapshot_dir(trained_run.run_dir, "last"))
    t = snap.train
    assert t.batch_size > 1 and t.kernel in ("auto", "fast")
    ids = snap.tokenizer.encode(small_text)
    streams = Streams.from_ids(split(ids, t.val_fraction)[0], t.batch_size, t.seq_len)
    assert streams.num_batches >= BATCHES
    model = build_model(snap.model, t.batch_size, t.seq_len, kernel="fast")
    model.set_weights(snap.weights)
    reset_state(model)
    probs = [_softmax(np.asarray(model(np.asarray(streams.batch(k)[0], np.int32)))[0]) for k in range(BATCHES)]
    return streams.data[0, :BATCHES * t.seq_len], np.concatenate(probs), t.seq_len


@pytest.fixture()
def gen(trained_run):
    return chargen.load(trained_run.run_dir, which="last")


def test_primed_with_a_prefix_of_row_0_it_predicts_what_training_does(gen, training_view):
    row, want, t = training_view
    positions = [1, t // 2, t - 1, t, t + 1, 2 * t - 1, 2 * t, 2 * t + 5, 3 * t]  # across both batch boundaries
    for p in positions:
        gen.reset()
        got = _softmax(gen.prime(gen.tokenizer.decode(row[:p])))
        np.testing.assert_allclose(got, want[p - 1], atol=1e-5, err_msg=f"after {p} tokens")


def test_primed_in_pieces_each_continuing_from_the_last(gen, training_view):
    row, want, t = training_view
    cuts = [0, 5, t - 1, t + 2, 2 * t, 3 * t]  # pieces that end on either side of each boundary
    gen.reset()
    for a, b in zip(cuts, cuts[1:]):
        got = _softmax(gen.prime(gen.tokenizer.decode(row[a:b])))
        np.testing.assert_allclose(got, want[b - 1], atol=1e-5, err_msg=f"after tokens {a}..{b}")


def test_stepped_one_token_at_a_time_through_the_numpy_step(gen, training_view):
    row, want, t = training_view
    gen.reset()
    gen.prime(gen.tokenizer.decode(row[:3]))
    state = gen.state
    for p in range(3, 3 * t):
        logits, state = gen.stepper.step(row[p:p + 1].astype(np.int64), state)
        np.testing.assert_allclose(_softmax(logits[0]), want[p], atol=1e-5, err_msg=f"after {p + 1} tokens")
