"""chargen.evaluate / `chargen eval`: every character scored once, state carried, compressors as computed directly."""

import bz2
import gzip
import json
import lzma
import math

import numpy as np
import pytest

import chargen
from cells import CELLS
from chargen.cli import main

LN2 = math.log(2.0)


@pytest.fixture(scope="module")
def gen(trained_run):
    return chargen.load(trained_run.run_dir, which="last")


def reference_nats(gen, text: str) -> float:
    """Summed cross-entropy of text[1:] given what precedes it, from zero state, one character at a
    time through the Generator's numpy engine: no Keras state, no batches, no padding."""
    ids = gen.tokenizer.encode(text).astype(np.int64)
    state = gen.zero_state()
    total = 0.0
    for i in range(len(ids) - 1):
        logits, state = gen.stepper.step(ids[i:i + 1], state)
        z = logits[0].astype(np.float64)
        log_probs = z - z.max() - np.log(np.exp(z - z.max()).sum())
        total -= log_probs[ids[i + 1]]
    return total


def streams_reference(gen, text: str, rows: int) -> float:
    """The documented layout: the targets cut into `rows` contiguous near-equal spans (the first
    M % rows one longer), each scored from zero state."""
    m = len(text) - 1
    lengths = [m // rows + (i < m % rows) for i in range(rows)]
    starts = np.cumsum([0] + lengths[:-1])
    return sum(reference_nats(gen, text[s:s + n + 1]) for s, n in zip(starts, lengths))


def score(text, trained_run, **kwargs):
    return chargen.evaluate(text, trained_run.run_dir, which="last", progress=False, **kwargs)


@pytest.mark.parametrize("seq_len", [7, 64, 5000])  # 7 and 64: many batches and a padded tail; 5000: one padded batch
def test_one_row_equals_feeding_the_text_char_by_char(trained_run, gen, small_text, seq_len):
    text = small_text[:700]
    r = score(text, trained_run, batch_size=1, seq_len=seq_len, compressors=False)
    assert (r.rows, r.characters, r.tokens, r.text_characters) == (1, 699, 699, 700)
    expected = reference_nats(gen, text)
    assert r.total_nats == pytest.approx(expected, rel=1e-5)
    assert abs(r.bits_per_char - expected / LN2 / 699) < 1e-4
    assert r.nats_per_char == pytest.approx(r.bits_per_char * LN2)
    assert (r.gzip_bits_per_char, r.bz2_bits_per_char, r.lzma_bits_per_char) == (None, None, None)


@pytest.mark.parametrize("cell", CELLS)
def test_rows_are_contiguous_streams_each_from_zero_state(trained_runs, small_text, cell):
    """With B rows, each span is scored from zero state with the state carried across batches:
    the sum of B char-by-char references. Checks that no character is lost or scored twice at
    span edges."""
    trained_run = trained_runs(cell)
    gen = chargen.load(trained_run.run_dir, which="last")
    text = small_text[:803]
    r = score(text, trained_run, batch_size=4, seq_len=16, compressors=False)
    assert r.rows == 4 and r.characters == 802
    assert r.total_nats == pytest.approx(streams_reference(gen, text, 4), rel=1e-5)
    # Splitting into streams only costs the context lost at 3 row starts: close to one row's score.
    one_row = score(text, trained_run, batch_size=1, seq_len=16, compressors=False)
    assert r.total_nats != pytest.approx(one_row.total_nats, abs=1e-6)
    assert abs(r.bits_per_char - one_row.bits_per_char) < 0.1


def test_short_texts_use_fewer_rows(trained_run, gen, small_text):
    for text in ("th", "the state", small_text[:100]):
        r = score(text, trained_run, batch_size=32, seq_len=16, compressors=False)
        assert r.rows == max(1, (len(text) - 1) // 16) and r.characters == len(text) - 1
        assert r.total_nats == pytest.approx(streams_reference(gen, text, r.rows), rel=1e-5)
    with pytest.raises(chargen.CorpusError, match="at least 2"):
        score("t", trained_run)


def test_compressors_match_a_direct_computation(trained_run, small_text):
    text = small_text[:2000]  # has 'király' and '中文': more UTF-8 bytes than characters
    data = text.encode("utf-8")
    assert len(data) > len(text)
    r = score(text, trained_run)
    assert r.gzip_bits_per_char == 8 * len(gzip.compress(data, compresslevel=9)) / len(text)
    assert r.bz2_bits_per_char == 8 * len(bz2.compress(data, 9)) / len(text)
    assert r.lzma_bits_per_char == 8 * len(lzma.compress(data, preset=9)) / len(text)
    assert r.compressor_bits_per_char() == {"gzip -9": r.gzip_bits_per_char, "bz2 -9": r.bz2_bits_per_char,
                                            "lzma -9": r.lzma_bits_per_char}


def test_unknown_characters_are_named_or_skipped(trained_run, small_text):
    text = small_text[:300]
    odd = "QQ€" + "".join(chr(0x3B1 + i) for i in range(25))  # 27 distinct characters the vocabulary lacks
    with pytest.raises(chargen.VocabularyError) as e:
        score(text + odd, trained_run)
    msg = str(e.value)
    assert "'Q'" in msg and "'α'" in msg and "'€'" not in msg and "and 7 more" in msg  # the first 20, sorted
    assert "--unknown skip" in msg and "\n" not in msg
    skipped = score(text[:150] + odd + text[150:], trained_run, unknown="skip")
    clean = score(text, trained_run)
    assert skipped.skipped == len(odd)
    assert (skipped.characters, skipped.total_nats, skipped.lzma_bits_per_char) == (
        clean.characters, pytest.approx(clean.total_nats, rel=1e-6), clean.lzma_bits_per_char)


def test_paths_and_texts(trained_run, small_text, tmp_path):
    book = tmp_path / "held_out.txt"
    book.write_text(small_text[:500], encoding="utf-8")
    from_path, from_str, from_text = (score(book, trained_run), score(str(book), trained_run),
                                      score(small_text[:500], trained_run))
    assert from_path == from_str == from_text
    with pytest.raises(chargen.CorpusError, match="no such file"):
        score(str(tmp_path / "mistyped.txt"), trained_run)
    with pytest.raises(chargen.ConfigError, match="^seq_len must be a positive integer, got 0"):
        score(book, trained_run, seq_len=0)


def test_library_exports_the_function_even_after_the_module_is_imported():
    import chargen.evaluation  # noqa: F401  (a submodule named `evaluate` would have shadowed the function)

    assert callable(chargen.evaluate) and chargen.evaluate is chargen.evaluation.evaluate
    assert {"evaluate", "EvalResult"} <= set(chargen.__all__)


def test_cli_table_and_json(trained_run, small_text, tmp_path, capsys):
    book = tmp_path / "held_out.txt"
    book.write_text(small_text[-600:], encoding="utf-8")
    root = trained_run.run_dir.parent
    assert main(["eval", str(book), "--root", str(root), "--checkpoint", "book", "--which", "last"]) == 0
    out = capsys.readouterr().out
    assert "held_out.txt: 599 characters predicted" in " ".join(out.split())
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert [line.split("│")[1].split()[0] for line in rows] == ["model", "gzip", "bz2", "lzma"]
    assert out.splitlines()[-1].strip() == "model: book (last), 2 streams"  # 599 targets // 256 per step

    assert main(["eval", str(book), "--root", str(root), "--which", "last", "--json", "--batch-size", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    direct = score(book, trained_run, batch_size=2)
    assert data == direct.to_dict() and data["rows"] == 2


@pytest.mark.parametrize("args, needle", [
    (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--seq-len", "-3"], "--seq-len must be a positive integer, got -3"),
    (["--checkpoint", "nope"], "no checkpoint named 'nope'"),
    (["--unknown", "error", "EXTRA"], "never saw"),
])
def test_cli_errors_are_one_line_and_exit_2(trained_run, small_text, tmp_path, capsys, args, needle):
    book = tmp_path / "b.txt"
    book.write_text(small_text[:200] + ("Q" if "EXTRA" in args else ""), encoding="utf-8")
    args = [a for a in args if a != "EXTRA"]
    assert main(["eval", str(book), "--root", str(trained_run.run_dir.parent), "--quiet", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("chargen: error: ") and needle in captured.err
    assert captured.err.count("\n") == 1
