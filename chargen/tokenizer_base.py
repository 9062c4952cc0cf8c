"""What every chargen tokenizer shares: a vocabulary of token texts, and tokenizer.json.

A tokenizer here is a Hugging Face `tokenizers` model (what is saved as tokenizer.json, and what
another program loads to use the vocabulary) plus chargen's own vectorised encoding of whole
books. `Tokenizer` holds what both kinds share, as minbpe's base.Tokenizer does: the token texts
and what follows from them (vocab_size, token_lengths, count_chars, decode, id_dtype) and the file
(to_str / from_str, save / load). A kind brings its name (`kind`), `encode`, `unknown_chars`,
`from_str` (which refuses any file but its own layout) and `with_chars` (new characters after the
old ids). `CharIndex` finds the ids of a whole text's characters in one vectorised step, for both.
chargen/char_tokenizer.py and chargen/bpe.py are the kinds, each importing only this module;
chargen/tokenizer.py chooses between them.
"""

from __future__ import annotations

import abc
import os
from functools import cached_property
from pathlib import Path

import numpy as np

from chargen.errors import CheckpointError, VocabularyError


def codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def text_alphabet(text: str, chunk: int = 1 << 22) -> list[str]:
    """The distinct characters of a text, in code point order (in chunks: a 100 MB book never held as code points)."""
    seen: set[int] = set()
    for start in range(0, len(text), chunk):
        seen.update(np.unique(codepoints(text[start:start + chunk])).tolist())
    return [chr(c) for c in sorted(seen)]


def show(chars: list[str], limit: int = 20) -> str:
    """Characters for a message: the first `limit`, quoted, and how many more."""
    shown = ", ".join(repr(c) for c in chars[:limit])
    return shown + (f" and {len(chars) - limit} more" if len(chars) > limit else "")


class CharIndex:
    """Each character of a fixed list -> its position in the list, for whole texts at once.

    Sorted code points let np.searchsorted do the lookup of a whole chunk in one vectorised call.
    """

    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise CheckpointError("tokenizer: the vocabulary must be distinct single characters")
        self.index = {c: i for i, c in enumerate(chars)}
        cps = np.array([ord(c) for c in chars], dtype=np.uint32)
        self._order = np.argsort(cps, kind="stable")
        self._sorted = cps[self._order]

    def unknown(self, text: str) -> list[str]:
        return sorted(set(text) - self.index.keys())

    def positions(self, text: str, dtype: np.dtype, chunk: int = 1 << 22) -> np.ndarray:
        """The position of every character of `text`; VocabularyError naming the characters not in the list."""
        out = np.empty(len(text), dtype=dtype)
        for start in range(0, len(text), chunk):
            cps = codepoints(text[start:start + chunk])
            pos = np.minimum(np.searchsorted(self._sorted, cps), len(self._sorted) - 1)
            bad = self._sorted[pos] != cps
            if bad.any():
                missing = sorted({chr(c) for c in np.unique(cps[bad])})
                raise VocabularyError(f"characters not in the vocabulary: {show(missing)}")
            out[start:start + len(cps)] = self._order[pos]
        return out


class Tokenizer(abc.ABC):
    """A vocabulary of token texts (`tokens[i]` is the text of id i) kept as a Hugging Face tokenizer (`_hf`)."""

    kind: str  # "char" or "bpe": what --tokenizer says and config.json records
    tokens: list[str]
    _hf: object  # tokenizers.Tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @cached_property
    def token_lengths(self) -> np.ndarray:
        """Characters in each token's text."""
        return np.array([len(t) for t in self.tokens], np.int64)

    @property
    def id_dtype(self) -> np.dtype:
        """What encode() returns: uint16 for vocabularies up to 65,536 tokens, else int32."""
        return np.dtype(np.uint16 if self.vocab_size <= 65536 else np.int32)

    def count_chars(self, ids: np.ndarray, chunk: int = 1 << 22) -> int:
        """How many characters `ids` (any shape) decode to, without decoding them."""
        ids = np.asarray(ids)
        if ids.size == 0:
            return 0
        counts = np.zeros(self.vocab_size, np.int64)
        for row in ids.reshape(-1, ids.shape[-1]) if ids.ndim > 1 else ids.reshape(1, -1):  # views, no copy
            for start in range(0, len(row), chunk):
                counts += np.bincount(row[start:start + chunk], minlength=self.vocab_size)
        return int(counts @ self.token_lengths)

    @abc.abstractmethod
    def unknown_chars(self, text: str) -> list[str]:
        """Characters of `text` the vocabulary cannot encode, sorted."""

    @abc.abstractmethod
    def with_chars(self, chars: list[str]) -> "Tokenizer":
        """This vocabulary with `chars` (single characters it lacks) added as new ids after the old ones, which
        keep theirs (fine-tuning on a text with new characters: chargen/finetune.py)."""

    @abc.abstractmethod
    def encode(self, text: str) -> np.ndarray:
        """Text -> ids in a compact array (id_dtype); VocabularyError naming characters it cannot encode."""

    def encode_hf(self, text: str) -> list[int]:
        """The same ids through the Hugging Face tokenizer alone (small texts; used by tests and tools)."""
        unknown = self.unknown_chars(text)
        if unknown:  # Hugging Face would drop them, or fail without saying which
            raise VocabularyError(f"characters not in the vocabulary: {show(unknown)}")
        return self._hf.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return "".join([self.tokens[int(i)] for i in ids])

    def decode_hf(self, ids) -> str:
        return self._hf.decode([int(i) for i in ids], skip_special_tokens=False)

    def to_str(self) -> str:
        """tokenizer.json's text."""
        return self._hf.to_str(pretty=True)

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self.to_str(), encoding="utf-8")

    @classmethod
    @abc.abstractmethod
    def from_str(cls, data: str, where: str = "tokenizer.json") -> "Tokenizer":
        """Rebuild from tokenizer.json text; CheckpointError unless it is this kind's own layout (nothing is run)."""

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Tokenizer":
        return cls.from_str(read_tokenizer_file(Path(path)), str(path))


def read_tokenizer_file(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{p}: missing; the checkpoint is incomplete, retrain or restore it") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{p}: cannot read it ({e})") from None
