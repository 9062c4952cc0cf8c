"""One token per Unicode character (`--tokenizer char`, the default), as a Hugging Face WordLevel vocabulary.

The Hugging Face tokenizer is what is saved (`tokenizer.json`) and what another program loads;
encoding a whole book goes through CharIndex instead (chargen/tokenizer_base.py): code points to
ids in one vectorised step, which keeps a 100 MB book to a few compact arrays instead of a Python
list of ints. A vocabulary made from a text is its characters in code point order; a vocabulary
extended for fine-tuning (chargen/finetune.py) keeps its ids and has the new characters after them.
"""

from __future__ import annotations

import json

import numpy as np

from chargen.errors import CheckpointError
from chargen.tokenizer_base import CharIndex, Tokenizer, text_alphabet

# Every single code point is one pre-token; "." alone does not match a newline.
_ONE_CHAR = ".|\n"
# The unknown token written to tokenizer.json: none. WordLevel requires a string, and one inside the
# vocabulary would be a real id (an output the network never learned, or a character unseen ones would
# silently become). "" is never a pre-token, so plain `tokenizers` refuses an unseen character with
# "WordLevel error: Missing [UNK] token from the vocabulary", as chargen refuses it. Files written
# before this said "<unk>" (also outside the vocabulary: the same behaviour) and still load.
NO_UNK = ""


class CharTokenizer(Tokenizer):
    """Maps each character of a fixed vocabulary to an id (its position in `chars`)."""

    kind = "char"

    def __init__(self, chars: list[str]):
        from tokenizers import Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HfTokenizer

        self._index = CharIndex(chars)  # checks: distinct single characters
        self.chars = list(chars)
        self._hf = HfTokenizer(models.WordLevel({c: i for i, c in enumerate(self.chars)}, unk_token=NO_UNK))
        self._hf.pre_tokenizer = pre_tokenizers.Split(Regex(_ONE_CHAR), behavior="isolated")
        self._hf.decoder = decoders.Fuse()

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """The vocabulary of a text: its distinct characters, in code point order."""
        return cls(text_alphabet(text))

    @property
    def tokens(self) -> list[str]:  # type: ignore[override]
        """The text of token i (one character each); the same list as `chars`."""
        return self.chars

    def count_chars(self, ids: np.ndarray, chunk: int = 1 << 22) -> int:
        """How many characters `ids` (any shape) decode to: one per id."""
        return int(np.asarray(ids).size)

    def unknown_chars(self, text: str) -> list[str]:
        return self._index.unknown(text)

    def with_chars(self, chars: list[str]) -> "CharTokenizer":
        return CharTokenizer(self.chars + list(chars))  # CharIndex refuses one already there

    def encode(self, text: str, chunk: int = 1 << 22) -> np.ndarray:
        """Text -> ids (uint16 for vocabularies up to 65,536 characters), vectorised and in chunks, so that
        a 100 MB book never holds more than a few chunk-sized temporaries besides the result."""
        return self._index.positions(text, self.id_dtype, chunk)

    @classmethod
    def from_str(cls, data: str, where: str = "tokenizer.json") -> "CharTokenizer":
        """Rebuild from tokenizer.json text, checking that it is chargen's one-character-per-token layout.

        Refused (CheckpointError): another model type, ids that are not 0..V-1, a pre-tokenizer other
        than one token per character, a normalizer or added tokens, and an unknown token inside the
        vocabulary (the file would then map unseen characters to it in `tokenizers` while chargen refuses them).
        """
        try:
            obj = json.loads(data)
            vocab = obj["model"]["vocab"]
            if obj["model"].get("type") != "WordLevel" or not isinstance(vocab, dict):
                raise ValueError("not a WordLevel vocabulary")
            chars = [None] * len(vocab)
            for ch, i in vocab.items():
                chars[i] = ch
            problem = _layout_problem(obj, vocab)
            if problem:
                raise ValueError(problem)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise CheckpointError(f"{where}: not a chargen character vocabulary ({e}); retrain or restore the file") from None
        if any(c is None for c in chars):
            raise CheckpointError(f"{where}: vocabulary ids are not 0..{len(chars) - 1}")
        return cls(chars)


def _layout_problem(obj: dict, vocab: dict) -> str | None:
    """What makes a WordLevel tokenizer.json encode differently from chargen's characters in `tokenizers`, if anything."""
    unk = obj["model"].get("unk_token")
    if not isinstance(unk, str) or unk in vocab:
        return f"its unknown token {unk!r} is in the vocabulary or not a string"
    pre = obj.get("pre_tokenizer") or {}
    if (pre.get("type"), pre.get("pattern"), pre.get("behavior")) != ("Split", {"Regex": _ONE_CHAR}, "Isolated"):
        return "its pre-tokenizer does not split the text into single characters"
    if obj.get("normalizer") is not None or obj.get("added_tokens"):
        return "it has a normalizer or added tokens"
    return None
