"""What both tokenizers share (chargen/tokenizer_base.py), tested once for each: the same interface and the same
promises, whatever the kind. Each kind's module imports only the base (no import loop between them)."""

import subprocess
import sys

import numpy as np
import pytest

from chargen.errors import CheckpointError, VocabularyError
from chargen.tokenizer import build_tokenizer, load_tokenizer, tokenizer_from_str
from chargen.tokenizer_base import Tokenizer

from conftest import ROOT


@pytest.fixture(scope="module", params=["char", "bpe"])
def tok(request, small_text):
    return build_tokenizer(request.param, small_text, 60 if request.param == "bpe" else None)


def test_it_is_a_tokenizer_with_the_shared_interface(tok):
    assert isinstance(tok, Tokenizer) and tok.kind in ("char", "bpe")
    assert tok.vocab_size == len(tok.tokens) == len(set(tok.tokens))
    np.testing.assert_array_equal(tok.token_lengths, [len(t) for t in tok.tokens])
    assert tok.id_dtype == np.uint16


def test_encode_decode_and_the_hugging_face_path_agree(tok, small_text):
    ids = tok.encode(small_text)
    assert ids.dtype == tok.id_dtype and tok.decode(ids) == small_text == tok.decode_hf(ids)
    assert tok.encode_hf(small_text[:300]) == tok.encode(small_text[:300]).tolist()
    assert tok.count_chars(ids) == len(small_text)
    rows = ids[: len(ids) // 4 * 4].reshape(4, -1)
    assert tok.count_chars(rows) == len(tok.decode(rows.ravel()))


def test_unknown_characters_are_named_not_dropped(tok):
    assert tok.unknown_chars("the ☃ row ☃ é") == ["é", "☃"]
    with pytest.raises(VocabularyError, match="'é', '☃'"):
        tok.encode("the ☃ row é")
    with pytest.raises(VocabularyError, match="'☃'"):
        tok.encode_hf("the ☃")


def test_the_file_round_trips_and_each_kind_refuses_the_others(tok, tmp_path, small_text):
    again = type(tok).from_str(tok.to_str())
    assert again.tokens == tok.tokens and again.to_str() == tok.to_str()
    tok.save(tmp_path / "tokenizer.json")
    for loaded in (type(tok).load(tmp_path / "tokenizer.json"), load_tokenizer(tmp_path / "tokenizer.json"),
                   tokenizer_from_str(tok.to_str())):
        assert type(loaded) is type(tok) and loaded.tokens == tok.tokens
        np.testing.assert_array_equal(loaded.encode(small_text), tok.encode(small_text))
    other = build_tokenizer("bpe" if tok.kind == "char" else "char", small_text, 60 if tok.kind == "char" else None)
    with pytest.raises(CheckpointError, match="not a chargen"):
        type(tok).from_str(other.to_str(), "other.json")


def test_each_kind_imports_only_the_base():
    code = ("import sys, chargen; before = set(sys.modules); import chargen.bpe, chargen.char_tokenizer; "
            "print(sorted(m for m in set(sys.modules) - before if m.startswith('chargen')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['chargen.bpe', 'chargen.char_tokenizer', 'chargen.tokenizer_base']"
