import json

import numpy as np
import pytest

from chargen.errors import CheckpointError, VocabularyError
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


# ---------------------------------------------------------------- tokenizer.json in plain `tokenizers`

# tokenizer.json for "ab\n" as chargen wrote it before the unknown token was "": "<unk>", not in the vocabulary.
OLD_FILE = """{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
 "pre_tokenizer": {"type": "Split", "pattern": {"Regex": ".|\\n"}, "behavior": "Isolated", "invert": false},
 "post_processor": null, "decoder": {"type": "Fuse"},
 "model": {"type": "WordLevel", "vocab": {"\\n": 0, "a": 1, "b": 2}, "unk_token": "<unk>"}}"""


def test_the_file_loads_in_plain_tokenizers_with_chargens_ids_and_refuses_unseen_characters(tmp_path):
    from tokenizers import Tokenizer

    text = "".join(SAMPLES)
    tok = CharTokenizer.from_text(text)
    tok.save(tmp_path / "tokenizer.json")
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert set(text) == set(tok.chars)  # the text has every character of the vocabulary
    assert hf.encode(text).ids == tok.encode(text).tolist()
    assert hf.decode(hf.encode(text).ids) == text and hf.get_vocab_size() == tok.vocab_size
    assert hf.model.unk_token not in hf.get_vocab()  # no id beyond the network's outputs
    with pytest.raises(Exception, match="Missing \\[UNK\\] token"):  # refused, as chargen refuses it
        hf.encode(text + "\u0416")
    with pytest.raises(VocabularyError):
        tok.encode(text + "\u0416")


def test_files_written_before_still_load():
    from tokenizers import Tokenizer

    old = CharTokenizer.from_str(OLD_FILE)
    assert old.chars == ["\n", "a", "b"] and old.encode("ab\nba").tolist() == [1, 2, 0, 2, 1]
    assert Tokenizer.from_str(OLD_FILE).encode("ab\nba").ids == [1, 2, 0, 2, 1]
    assert json.loads(old.to_str())["model"]["unk_token"] == ""  # saved again in the new layout


@pytest.mark.parametrize("change, needle", [
    (lambda o: o["model"].update(unk_token="a"), "unknown token 'a' is in the vocabulary"),
    (lambda o: o.update(pre_tokenizer={"type": "Whitespace"}), "does not split the text into single characters"),
    (lambda o: o.update(normalizer={"type": "Lowercase"}), "normalizer"),
    (lambda o: o["model"].update(vocab={"a": 0, "bc": 1}), "distinct single characters"),
    (lambda o: o["model"].update(vocab={"a": 0, "b": 2}), "not a chargen character vocabulary"),
])
def test_a_file_that_is_not_chargens_layout_is_refused(change, needle):
    obj = json.loads(OLD_FILE)
    change(obj)
    with pytest.raises(CheckpointError, match=needle):
        CharTokenizer.from_str(json.dumps(obj))
