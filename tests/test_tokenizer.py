import numpy as np
import pytest

from chargen.errors import VocabularyError
from chargen.tokenizer import CharTokenizer

SAMPLES = [
    "plain ascii text",
    "line one\nline two\r\nwindows\n\n",
    "tabs\tand  spaces \t",
    "accents: é è ü ñ and combining e\u0301",
    "CJK: 中文字符 日本語 한국어",
    "emoji: 😀 👍🏽 👨‍👩‍👧 🇫🇷",
    "\u2028line sep, nbsp\u00a0, zero-width\u200b",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_is_exact(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert len(ids) == len(text)  # one token per Unicode character
    assert tok.decode(ids) == text
    assert tok.decode_hf(ids) == text
    assert list(ids) == tok.encode_hf(text)  # the vectorised path agrees with Hugging Face's


@pytest.mark.parametrize("text", SAMPLES)
def test_save_load_round_trip(tmp_path, text):
    tok = CharTokenizer.from_text(text)
    tok.save(tmp_path / "tokenizer.json")
    again = CharTokenizer.load(tmp_path / "tokenizer.json")
    assert again.chars == tok.chars
    assert again.decode(again.encode(text)) == text


def test_encoding_is_compact_and_chunked():
    text = "abcdefgh" * 1000 + "é"
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text, chunk=37)  # chunk boundaries must not matter
    assert ids.dtype == np.uint16
    np.testing.assert_array_equal(ids, tok.encode(text))
    assert tok.decode(ids) == text


def test_unknown_characters_are_named():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(VocabularyError, match="'z'"):
        tok.encode("abz")
    assert tok.unknown_chars("abzq") == ["q", "z"]
