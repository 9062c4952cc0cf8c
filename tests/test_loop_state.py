"""The training loop's LSTM state, pinned by what it computes (no spies on function calls).

With every learning rate at 0 the weights never change, so everything the loop computes is a
function of the text alone and can be recomputed independently: each training row is its own
stream of the book read from zero state in ONE pass by a separate model (the stock Keras LSTM,
not the FastLSTM kernel training uses), with no batches, no carrying and no loop. Then:
- the state the loop saves after an epoch is that one-pass state, row for row (a reset between
  batches, rows trading streams, batches out of order, a batch dropped or repeated, validation
  touching the training model: each changes it);
- every step's loss is the one-pass loss over that batch's columns (a target not shifted, a
  wrong layout);
- the second epoch starts from zero and so repeats the first exactly, step by step;
- validation is the held-out tail read as its own carried streams from zero, every epoch.
"""

import numpy as np
import pytest

import chargen
from chargen import checkpoint as ckpt
from chargen import trainer as train_mod
from chargen.net.model import build_model, get_state

from conftest import TINY


def long_memory_weights(shapes, seed=0):
    """Weights under which a state remembers: forget gates near 0.95 (a 20-step memory, so a batch
    of T=16 leaves half its state to the next), a contractive recurrence (small recurrent
    weights, so float rounding never grows), and confident predictions (so a wrong target costs).
    Fresh initial weights forget within a few characters and predict nearly uniformly, which
    would let a reset before every batch or an unshifted target pass unnoticed."""
    rng = np.random.default_rng(seed)
    out = []
    for i, shape in enumerate(shapes):
        if i == 0:
            w = rng.normal(0, 1.0, shape)  # embedding
        elif len(shape) == 1 and i < len(shapes) - 1:  # an LSTM bias, gates (i, f, c, o)
            w = rng.normal(0, 0.3, shape)
            u = shape[0] // 4
            w[u:2 * u] += 3.0
        elif i % 3 == 2 and i < len(shapes) - 2:  # an LSTM recurrent kernel
            w = rng.normal(0, 0.1, shape)
        else:  # input kernels, the output layer
            w = rng.normal(0, 0.6, shape)
        out.append(w.astype(np.float32))
    return out


class FrozenLoop(train_mod._Loop):
    """The real training loop, on long-memory weights, with a learning-rate schedule that is 0 at every step.

    Adam's update is lr x m / (sqrt(v) + eps), so with lr 0 each weight stays bit for bit what
    it was; everything else (batches, state, validation, saving) is the loop's own code.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model.set_weights(long_memory_weights([w.shape for w in self.model.get_weights()]))

    def _lr_schedule(self, tf):
        return lambda iterations: 0.0


class Record:
    """Per epoch: every step's loss, and what the epoch's snapshot holds."""

    def __init__(self):
        self.losses: dict[int, list[float]] = {}
        self.snaps: dict[int, ckpt.Snapshot] = {}

    def on_step_end(self, info):
        self.losses.setdefault(info.epoch, []).append(info.loss)

    def on_epoch_end(self, info):
        self.snaps[info.epoch] = ckpt.read_snapshot(ckpt.snapshot_dir(info.run_dir, "last"))


@pytest.fixture(scope="module")
def frozen(tmp_path_factory, small_text):
    d = tmp_path_factory.mktemp("frozen")
    book = d / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    record = Record()
    real, train_mod._Loop = train_mod._Loop, FrozenLoop
    try:
        result = chargen.train(book, root=d / "ck", epochs=2, seed=5, progress=False, callbacks=[record], **TINY)
    finally:
        train_mod._Loop = real
    return result, record, small_text


def _streams(ids, rows, seq_len):
    """The documented layout, written out here: row i is the i-th of `rows` equal slices of the
    ids; an epoch reads (per - 1) // T batches of T columns, targets one to the right."""
    per = len(ids) // rows
    data = np.stack([ids[i * per:(i + 1) * per] for i in range(rows)]).astype(np.int32)
    n = (per - 1) // seq_len * seq_len
    return data[:, :n], data[:, 1:n + 1]


def _one_pass(snap, x, y):
    """Read every row of x from zero state in one call of a stock-Keras model with the snapshot's weights.

    Returns the per-position cross-entropy (rows, columns) and the final state per layer."""
    model = build_model(snap.model, batch_size=x.shape[0], seq_len=None, kernel="keras")
    model.set_weights(snap.weights)
    logits = np.asarray(model(x), np.float64)
    z = logits - logits.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_p, y[..., None].astype(np.int64), -1)[..., 0]
    return nll, get_state(model)


@pytest.fixture(scope="module")
def reference(frozen):
    result, record, text = frozen
    snap = record.snaps[1]
    t = snap.train
    ids = snap.tokenizer.encode(text)
    n_val = int(len(ids) * t.val_fraction)
    train_ids, val_ids = ids[:len(ids) - n_val], ids[len(ids) - n_val:]
    x, y = _streams(train_ids, t.batch_size, t.seq_len)
    nll, state = _one_pass(snap, x, y)
    steps = nll.reshape(t.batch_size, -1, t.seq_len).mean(axis=(0, 2))  # batch k = columns [kT, (k+1)T)
    val_rows = min(t.batch_size, len(val_ids) // (t.seq_len + 1))
    val_nll, _ = _one_pass(snap, *_streams(val_ids, val_rows, t.seq_len))
    return {"step_losses": steps, "state": state, "val_loss": float(val_nll.mean())}


def test_the_weights_stay_frozen(frozen):
    _, record, _ = frozen
    for a, b in zip(record.snaps[1].weights, record.snaps[2].weights):
        np.testing.assert_array_equal(a, b)


def test_each_rows_saved_state_is_its_stream_read_in_one_pass_from_zero(frozen, reference):
    _, record, _ = frozen
    saved = record.snaps[1].train_state  # per layer h, c as (B, units), in stream order
    assert len(saved) == 2 * len(reference["state"])
    for layer, (h, c) in enumerate(reference["state"]):
        for name, got, want in (("h", saved[2 * layer], h), ("c", saved[2 * layer + 1], c)):
            assert got.shape == want.shape == (TINY["batch_size"], TINY["units"][layer])
            np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"layer {layer} {name}, rows in stream order")
    # (the two kernels differ by ~1e-5 in c of magnitude ~5; a reset before the last batch changes c by ~4)


def test_every_steps_loss_is_the_one_pass_loss_of_its_columns(frozen, reference):
    _, record, _ = frozen
    got = np.array(record.losses[0])
    want = reference["step_losses"]
    assert len(got) == len(want)  # every batch once: none dropped, none repeated
    np.testing.assert_allclose(got, want, rtol=2e-5)


def test_epoch_two_starts_from_zero_and_repeats_epoch_one_exactly(frozen, reference):
    result, record, _ = frozen
    assert record.losses[1] == record.losses[0]  # the same floats, step by step: it started from zero state
    for a, b in zip(record.snaps[1].train_state, record.snaps[2].train_state):
        np.testing.assert_array_equal(a, b)
    h1, h2 = result.history
    assert (h1["train_loss"], h1["val_loss"]) == (h2["train_loss"], h2["val_loss"])
    # the second epoch did not improve, so `best` still names the first epoch's snapshot
    run = result.run_dir
    assert ckpt.snapshot_dir(run, "best").name == "e0001-s000000" and ckpt.snapshot_dir(run, "last").name == "e0002-s000000"


def test_validation_reads_the_held_out_tail_as_carried_streams_from_zero(frozen, reference):
    result, _, _ = frozen
    for record in result.history:  # history keeps 6 decimals
        assert record["val_loss"] == pytest.approx(reference["val_loss"], abs=2e-6), record["epoch"]
