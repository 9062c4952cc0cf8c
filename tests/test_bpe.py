"""--tokenizer bpe: the BPE vocabulary, tokenizer.json dispatch and checks, and training, bits per
character and sampling with it; character runs (old checkpoints included) keep working."""

import json
import math
import shutil

import numpy as np
import pytest

import chargen
from chargen import checkpoint as ckpt
from chargen import bpe
from chargen.bpe import BpeTokenizer
from chargen.errors import CheckpointError, ConfigError, VocabularyError
from chargen.streams import Streams, split
from chargen.tokenizer import CharTokenizer, load_tokenizer, tokenizer_from_str
from conftest import TINY
from chargen.cli import main
from test_cli import _tiny_flags

SAMPLES = [
    "",
    "plain ascii text",
    "line one\nline two\r\nwindows\n\n",
    "  leading spaces,  double  spaces \t tabs\n \n",
    "accents: é è ü ñ and combining e\u0301",
    "CJK: 中文字符 日本語 한국어",
    "emoji: 😀 👍🏽 👨‍👩‍👧 🇫🇷",
    "\u2028line sep, nbsp\u00a0, zero-width\u200b",
    "no newline at the end",
]
BOOK = ("the state of each row carries on the stream of the book.\n" * 30) + "".join(SAMPLES)


@pytest.fixture(scope="module")
def tokenizers():
    return {"char": CharTokenizer.from_text(BOOK), "bpe": BpeTokenizer.train(BOOK, 120)}


@pytest.mark.parametrize("kind", ["char", "bpe"])
@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_is_exact(tokenizers, kind, text):
    tok = tokenizers[kind]
    ids = tok.encode(text)
    assert ids.dtype == np.uint16 and ids.ndim == 1
    assert tok.decode(ids) == text
    assert tok.decode_hf(ids) == text
    assert list(ids) == tok.encode_hf(text)  # the fast path gives Hugging Face's own tokens
    assert tok.count_chars(ids) == len(text)
    assert "".join(tok.tokens[i] for i in ids) == text


def test_bpe_tokens_span_several_characters_and_chunks_do_not_matter(tokenizers):
    tok = tokenizers["bpe"]
    assert tok.kind == "bpe" and tok.vocab_size == 120
    assert max(len(t) for t in tok.tokens) > 1
    ids = tok.encode(BOOK)
    assert len(ids) < 0.6 * len(BOOK)  # the merges do compress
    np.testing.assert_array_equal(tok.encode(BOOK, chunk=37), ids)  # cut anywhere after a newline: same tokens
    grid = ids[: 10 * (len(ids) // 10)].reshape(10, -1)[:, 3:]  # a 2-D view, as the loop counts it
    assert tok.count_chars(grid) == len(tok.decode(grid.ravel()))


def test_a_hash_collision_is_caught_and_encoded_exactly(tokenizers, monkeypatch):
    tok = tokenizers["bpe"]
    # With base 1 a word's hash is the sum of its characters and its length: anagrams collide.
    monkeypatch.setattr(bpe, "_HASH_BASE", np.uint64(1))
    monkeypatch.setattr(bpe, "_HASH_INVERSE", np.uint64(1))
    text = "the eht teh\nhet the\n"
    assert list(tok.encode(text)) == tok.encode_hf(text)


def test_unknown_characters_are_named(tokenizers):
    tok = tokenizers["bpe"]
    assert tok.unknown_chars("the Ωq§") == sorted(["q", "§", "Ω"])
    with pytest.raises(VocabularyError, match="'§'"):
        tok.encode("the §")  # Hugging Face alone would drop it silently
    with pytest.raises(VocabularyError, match="'§'"):
        tok.encode_hf("the §")


def test_vocab_size_too_small_is_a_config_error():
    with pytest.raises(ConfigError, match=r"--vocab-size 5 is too small.*at least 7"):
        BpeTokenizer.train("abcdef", 5)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_save_load_dispatches_on_the_model_type(tokenizers, tmp_path, kind):
    tok = tokenizers[kind]
    tok.save(tmp_path / "tokenizer.json")
    assert json.loads((tmp_path / "tokenizer.json").read_text())["model"]["type"] == {"char": "WordLevel", "bpe": "BPE"}[kind]
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert type(again) is type(tok) and again.tokens == tok.tokens
    for text in SAMPLES:
        np.testing.assert_array_equal(again.encode(text), tok.encode(text))
    assert tokenizer_from_str(tok.to_str()).tokens == tok.tokens


def _set(path, value):
    def change(doc):
        *parents, last = path
        for key in parents:
            doc = doc[key]
        doc[last] = value
    return change


def _merge_of_unknown_tokens(doc):
    doc["model"]["merges"].append(["zz", "yy"])


def _duplicate_id(doc):
    vocab = doc["model"]["vocab"]
    vocab[max(vocab, key=vocab.get)] = 0


FOREIGN = {
    "Unigram model": (_set(["model", "type"], "Unigram"), "model type 'Unigram'"),
    "byte-level pre-tokenizer (GPT-2)": (_set(["pre_tokenizer"], {"type": "ByteLevel", "add_prefix_space": False,
                                                                   "trim_offsets": True, "use_regex": True}),
                                         "pre_tokenizer"),
    "lowercasing normalizer": (_set(["normalizer"], {"type": "Lowercase"}), "normalizer"),
    "byte fallback": (_set(["model", "byte_fallback"], True), "byte_fallback"),
    "unknown token": (_set(["model", "unk_token"], "<unk>"), "unk_token"),
    "special tokens": (_set(["added_tokens"], [{"id": 0, "content": "<s>", "special": True}]), "added_tokens"),
    "merge of tokens not in the vocabulary": (_merge_of_unknown_tokens, "merge 'zz' \\+ 'yy'"),
    "two tokens with one id": (_duplicate_id, "unique id"),
    "merges as one string": (_set(["model", "merges"], ["t h"]), "not a pair of strings"),
    "no model": (lambda doc: doc.pop("model"), "not a Hugging Face tokenizer.json"),
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
def test_corrupted_or_foreign_tokenizer_json_is_refused(tokenizers, tmp_path, case):
    change, needle = FOREIGN[case]
    doc = json.loads(tokenizers["bpe"].to_str())
    change(doc)
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(CheckpointError, match=needle) as err:
        load_tokenizer(tmp_path / "tokenizer.json")
    assert "tokenizer.json" in str(err.value)


@pytest.mark.parametrize("data", ["", "not json", "[1, 2]", '{"model": "BPE"}'])
def test_tokenizer_json_that_is_not_one_is_refused(data):
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        tokenizer_from_str(data)


# ---------------------------------------------------------------- training and sampling with BPE

@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory, small_text):
    d = tmp_path_factory.mktemp("bpe")
    book = d / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    result = chargen.train(book, root=d / "checkpoints", epochs=2, seed=3, progress=False, tokenizer="bpe",
                           bpe_vocab=60, **TINY)
    return book, result


def _scored_chars_per_token(tok, ids, rows, seq_len):
    streams = Streams.from_ids(ids, rows, seq_len)
    targets = streams.data[:, 1:streams.num_batches * seq_len + 1]
    return len(tok.decode(targets.ravel())) / targets.size  # counted by decoding, not by count_chars


def test_bpe_run_reports_bits_per_character(bpe_run, small_text):
    book, result = bpe_run
    snap = ckpt.snapshot_dir(result.run_dir, "last")
    assert json.loads((snap / "tokenizer.json").read_text())["model"]["type"] == "BPE"
    config = json.loads((snap / "config.json").read_text())
    assert config["train"]["tokenizer"] == "bpe" and config["train"]["bpe_vocab"] == 60
    tok = load_tokenizer(snap / "tokenizer.json")
    assert config["model"]["vocab_size"] == tok.vocab_size == 60
    ids = tok.encode(small_text)
    train_ids, val_ids = split(ids, 0.1)
    t = TINY["seq_len"]
    train_cpt = _scored_chars_per_token(tok, train_ids, TINY["batch_size"], t)
    val_cpt = _scored_chars_per_token(tok, val_ids, min(TINY["batch_size"], len(val_ids) // (t + 1)), t)
    assert train_cpt > 1.3 and val_cpt > 1.3  # tokens really span characters: bpc differs from loss / ln 2
    for h in result.history:  # losses stay per token; bpc = loss x tokens / characters / ln 2
        assert h["val_bpc"] == pytest.approx(h["val_loss"] / val_cpt / math.log(2), abs=2e-6)
        assert h["train_bpc"] == pytest.approx(h["train_loss"] / train_cpt / math.log(2), abs=2e-6)


def test_bpe_run_samples_text_that_decodes(bpe_run):
    _, result = bpe_run
    gen = chargen.load(result.run_dir)
    tokens, longest = gen.tokenizer.tokens, max(len(t) for t in gen.tokenizer.tokens)
    pieces = list(gen.stream("the ", length=50, temperature=1.0, rng_seed=5))
    text = "".join(pieces)
    assert all(p in tokens for p in pieces) and any(len(p) > 1 for p in pieces)
    assert 50 <= len(text) < 50 + longest  # length counts characters; the last token may run over
    assert gen.tokenizer.unknown_chars(text) == []
    gen.reset()
    assert gen.generate("the ", 50, temperature=1.0, rng_seed=5) == text  # same seed, same text
    gen.reset()
    assert len(gen.generate("", 10, temperature=0)) >= 10  # from zero state: a newline token first
    steps = list(gen.stream_many("the ", num_samples=3, length=30, rng_seed=1))  # one list of 3 pieces per step
    texts = ["".join(pieces) for pieces in zip(*steps)]
    assert len(texts) == 3 and all(30 <= len(t) < 30 + longest for t in texts)
    with pytest.raises(VocabularyError, match="'§'"):
        gen.generate("the §", 5)
    assert len(gen.generate("the §", 5, unknown="skip")) >= 5


def test_bpe_run_resumes(bpe_run, tmp_path):
    book, result = bpe_run
    root = tmp_path / "checkpoints"
    shutil.copytree(result.run_dir, root / result.run_dir.name, symlinks=True)
    more = chargen.train(book, root=root, name=result.run_dir.name, resume=True, epochs=3, progress=False)
    assert [h["epoch"] for h in more.history] == [1, 2, 3]
    with pytest.raises(ConfigError, match="^bpe_vocab 70 differs"):
        chargen.train(book, root=root, name=result.run_dir.name, resume=True, epochs=4, bpe_vocab=70, progress=False)


def _cli(*args) -> int:
    """`chargen ARGS` in this process (the same parser and handlers; no second TensorFlow start-up)."""
    return main([str(a) for a in args])


def test_train_and_sample_with_bpe_at_the_command_line(tmp_path, small_text, capsys):
    book, root = tmp_path / "book.txt", tmp_path / "checkpoints"
    book.write_text(small_text, encoding="utf-8")
    assert _cli("train", book, "--root", root, "--tokenizer", "bpe", "--vocab-size", 50, "--epochs", 1, "--seed", 1,
                "--quiet", *_tiny_flags()) == 0
    tok = load_tokenizer(ckpt.snapshot_dir(root / "book", "last") / "tokenizer.json")
    assert tok.kind == "bpe" and tok.vocab_size == 50
    capsys.readouterr()
    assert _cli("sample", "--root", root, "--seed", "the ", "--length", 40, "--rng-seed", 3, "--echo-seed") == 0
    out = capsys.readouterr().out.rstrip("\n")
    assert out.startswith("the ") and len(out) >= 44 and tok.unknown_chars(out) == []


@pytest.mark.parametrize("args, needle", [
    (["--vocab-size", "300"], "--vocab-size 300 is for --tokenizer 'bpe'"),
    (["--tokenizer", "bpe", "--vocab-size", "10"], "--vocab-size 10 is too small"),
    (["--tokenizer", "bpe", "--vocab-size", "0"], "--vocab-size must be an integer from 2"),
])
def test_bad_tokenizer_options_are_one_line_and_write_nothing(tmp_path, small_text, capsys, args, needle):
    book = tmp_path / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    assert _cli("train", book, "--root", tmp_path / "checkpoints", *args, "--quiet", *_tiny_flags()) == 2
    err = capsys.readouterr().err
    assert err.startswith("chargen: error: ") and needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "checkpoints").exists()


# ---------------------------------------------------------------- character runs keep working

def test_char_runs_and_checkpoints_from_before_bpe_still_load(trained_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(trained_run.run_dir, old, symlinks=True)
    for config in [old / "config.json", *old.glob("snapshots/*/config.json")]:  # as written before --tokenizer
        doc = json.loads(config.read_text())
        assert doc["train"].pop("tokenizer") == "char" and doc["train"].pop("bpe_vocab") is None
        config.write_text(json.dumps(doc))
    for run in (trained_run.run_dir, old):
        gen = chargen.load(run)
        assert gen.tokenizer.kind == "char" and gen.tokenizer.tokens == gen.tokenizer.chars
        assert len(gen.generate("the ", 30, rng_seed=1)) == 30  # exactly: one character per token
    assert trained_run.history[-1]["val_bpc"] == pytest.approx(trained_run.history[-1]["val_loss"] / math.log(2), abs=1e-6)


def test_config_and_tokenizer_of_different_kinds_do_not_belong_together(trained_run, tmp_path, tokenizers):
    run = tmp_path / "mixed"
    shutil.copytree(trained_run.run_dir, run, symlinks=True)
    (ckpt.snapshot_dir(run, "last") / "tokenizer.json").write_text(tokenizers["bpe"].to_str(), encoding="utf-8")
    with pytest.raises(CheckpointError, match="do not belong together"):
        chargen.load(run, which="last")


def test_too_short_for_a_batch_counts_tokens_with_bpe(tmp_path, small_text):
    book = tmp_path / "book.txt"
    book.write_text(small_text[:1500], encoding="utf-8")
    with pytest.raises(chargen.CorpusError, match=r"the training text has [\d,]+ tokens but one batch needs"):
        chargen.train(book, root=tmp_path / "ck", tokenizer="bpe", bpe_vocab=80, batch_size=64, seq_len=64,
                      progress=False)
    with pytest.raises(chargen.CorpusError, match=r"has [\d,]+ characters but one batch needs"):
        chargen.train(book, root=tmp_path / "ck", batch_size=64, seq_len=64, progress=False)
    assert not (tmp_path / "ck").exists()
