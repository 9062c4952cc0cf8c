"""benchmarks/state_ablation.py: its batch orders are what they claim, reset really resets, it runs."""

import importlib.util
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from chargen.config import ModelConfig
from chargen.streams import Streams
from chargen.tokenizer import CharTokenizer

SCRIPT = ROOT / "benchmarks" / "state_ablation.py"
spec = importlib.util.spec_from_file_location("state_ablation", SCRIPT)
sa = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sa)


def test_carried_rows_continue_and_state_resets_only_at_an_epoch_start():
    ids = np.arange(1000)
    streams = Streams.from_ids(ids, 4, 7)
    nb = streams.num_batches
    got = list(sa.stream_batches(streams, 2 * nb + 3))  # wraps into a third epoch
    assert len(got) == 2 * nb + 3
    for k, (x, y, reset) in enumerate(got):
        np.testing.assert_array_equal(y, x + 1)
        assert reset == (k % nb == 0)
        np.testing.assert_array_equal(x, streams.batch(k % nb)[0])
        if k + 1 < len(got) and (k + 1) % nb:  # within an epoch, row i of batch k+1 continues row i of batch k
            np.testing.assert_array_equal(got[k + 1][0][:, 0], x[:, -1] + 1)
    never = list(sa.make_batches("never", ids, 4, 7, nb + 2, seed=0))
    assert not any(r for _, _, r in never)


def test_reset_mode_serves_the_same_batches_with_a_reset_before_each():
    ids = np.arange(2000)
    carried = list(sa.make_batches("carried", ids, 5, 9, 60, seed=0))
    reset = list(sa.make_batches("reset", ids, 5, 9, 60, seed=0))
    assert len(carried) == len(reset) == 60
    for (xc, yc, _), (xr, yr, r) in zip(carried, reset):
        np.testing.assert_array_equal(xc, xr)
        np.testing.assert_array_equal(yc, yr)
        assert r
    assert sum(r for _, _, r in carried) == 2  # 60 steps = 1 epoch of 44 batches + 16: two epoch starts


def test_shuffled_windows_are_slices_of_the_text_in_a_shuffled_order():
    n, b, t = 3000, 4, 10
    ids = np.arange(n)
    got = list(sa.make_batches("shuffled", ids, b, t, 200, seed=1))
    assert len(got) == 200
    per_epoch = ((n - t) // t) // b  # whole batches of back-to-back windows, from an offset < T
    starts = []
    for x, y, reset in got:
        assert reset and x.shape == y.shape == (b, t)
        for row_x, row_y in zip(x, y):
            np.testing.assert_array_equal(row_x, ids[row_x[0]:row_x[0] + t])  # a real slice
            np.testing.assert_array_equal(row_y, ids[row_x[0] + 1:row_x[0] + t + 1])  # its next characters
        starts += list(x[:, 0])
    first = np.array(starts[: per_epoch * b])
    assert len(set(first)) == len(first)  # no window twice in an epoch
    assert len(set(first % t)) == 1  # back to back from one offset
    assert not np.all(np.diff(first) > 0)  # not in text order
    again = [x[:, 0] for x, _, _ in sa.make_batches("shuffled", ids, b, t, 200, seed=1)]
    other = [x[:, 0] for x, _, _ in sa.make_batches("shuffled", ids, b, t, 200, seed=2)]
    np.testing.assert_array_equal(np.concatenate(again), starts)  # deterministic given the seed
    assert not np.array_equal(np.concatenate(other), starts)


def test_unknown_mode_and_too_short_text():
    with pytest.raises(ValueError, match="unknown mode"):
        sa.make_batches("sometimes", np.arange(100), 2, 4, 3, seed=0)
    from chargen.errors import CorpusError

    with pytest.raises(CorpusError, match="lower --batch-size or --seq-len"):
        sa.make_batches("shuffled", np.arange(20), 4, 8, 3, seed=0)


@pytest.fixture(scope="module")
def tiny(small_text):
    import keras

    from chargen.net.model import build_model

    tok = CharTokenizer.from_text(small_text)
    ids = tok.encode(small_text)
    cfg = ModelConfig(vocab_size=tok.vocab_size, embed=8, units=(24, 16))
    keras.utils.set_random_seed(0)
    return cfg, build_model(cfg, 4, None).get_weights(), ids


def test_reset_mode_zeroes_the_state_before_every_batch(tiny):
    cfg, init, ids = tiny

    def losses(mode):
        _, out = sa.train_run(cfg, init, sa.make_batches(mode, ids, 4, 16, 3, seed=0), 4, 16, 2e-3, 5.0)
        return out

    carried, reset = losses("carried"), losses("reset")
    assert carried[0] == reset[0]  # same batch, same weights, both from zero state
    assert carried[1] != reset[1]  # same weights after step 1, same batch; only the state differs
    assert losses("carried") == carried  # deterministic, so the difference is the state and nothing else


def test_validation_covers_every_target_once_and_carried_state_spans_the_tail(tiny):
    cfg, init, ids = tiny
    data = sa.val_layout(ids[:1203], 4)
    assert data.shape == (4, 300)
    ys = [y for _, y in sa.val_windows(data, 32)]
    np.testing.assert_array_equal(np.concatenate(ys, axis=1), data[:, 1:])  # 299 = 9 x 32 + 11: the last is short
    model, _ = sa.train_run(cfg, init, sa.make_batches("carried", ids, 4, 16, 20, seed=0), 4, 16, 1e-2, 5.0)
    weights = model.get_weights()
    ev = sa.Evaluator(cfg, sa.val_layout(ids[:1028], 4), carried_window=64)  # 256 targets per row
    carried = ev.bpc(weights)
    ev.carried_window = 128  # with state carried, how the tail is cut into calls does not matter
    assert ev.bpc(weights) == pytest.approx(carried, abs=1e-4)
    assert abs(ev.bpc(weights, reset_every=8) - carried) > 1e-3  # zeroing every 8 chars changes the score
    assert 0 < carried < 2 * np.log2(cfg.vocab_size)


def test_the_script_runs_end_to_end_and_prints_the_table(tmp_path, small_text):
    book = tmp_path / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    out = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--book", str(book), "--seq-lens", "4,8",
                          "--budget-chars", "256", "--val-rows", "4"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    head = [i for i, line in enumerate(lines) if line.split()[:5] == ["seq_len", "steps", "chars", "carried", "reset"]]
    assert len(head) == 2  # carried-state table and reset-every-seq_len table
    for i in head:
        rows = [line.split() for line in lines[i + 1:i + 3]]
        assert [r[:3] for r in rows] == [["4", "16", "256"], ["8", "8", "256"]]  # 256 // (4 x T) steps each
        for r in rows:
            bpc = [float(v) for v in r[3:6]]
            assert all(0 < v < 10 for v in bpc)
            assert float(r[6]) == pytest.approx(bpc[1] - bpc[0], abs=2e-4)  # reset - carried
    assert sum(1 for line in lines if re.match(r"seq_len +\d+ +(carried|reset|shuffled) ", line)) == 6  # per run


def test_a_missing_book_is_one_line_not_a_traceback(tmp_path):
    with pytest.raises(SystemExit, match=r"^state_ablation: error: .*missing\.txt"):
        sa.main(["--book", str(tmp_path / "missing.txt")])
