"""One token per Unicode character, as a Hugging Face `tokenizers` vocabulary; and choosing a tokenizer.

The Hugging Face tokenizer is what we save (`tokenizer.json`) and what decodes. Encoding a
whole book goes through a numpy lookup table instead: code points -> ids in one vectorised
step, which keeps a 100 MB book to a few compact arrays instead of a Python list of ints.

`build_tokenizer` makes the kind `--tokenizer` asks for (this one, or `chargen.bpe.BpeTokenizer`)
and `load_tokenizer` reads either back from tokenizer.json by its model type. Both classes have
the same interface: vocab_size, tokens (the text of token i), token_lengths, encode, decode,
count_chars, unknown_chars, id_dtype, to_str/from_str, save/load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from chargen.config import TrainConfig, choices
from chargen.errors import CheckpointError, ConfigError, VocabularyError

if TYPE_CHECKING:
    from chargen.bpe import BpeTokenizer

# Every single code point is one pre-token; "." alone does not match a newline.
_ONE_CHAR = ".|\n"
# The unknown token written to tokenizer.json: none. WordLevel requires a string, and one inside the
# vocabulary would be a real id (an output the network never learned, or a character unseen ones would
# silently become). "" is never a pre-token, so plain `tokenizers` refuses an unseen character with
# "WordLevel error: Missing [UNK] token from the vocabulary", as chargen refuses it. Files written
# before this said "<unk>" (also outside the vocabulary: the same behaviour) and still load.
NO_UNK = ""


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class CharTokenizer:
    """Maps each character of a fixed vocabulary to an id (ids sorted by code point)."""

    kind = "char"

    def __init__(self, chars: list[str]):
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise CheckpointError("tokenizer: the vocabulary must be distinct single characters")
        self.chars = list(chars)
        self._hf = Tokenizer(models.WordLevel({c: i for i, c in enumerate(self.chars)}, unk_token=NO_UNK))
        self._hf.pre_tokenizer = pre_tokenizers.Split(Regex(_ONE_CHAR), behavior="isolated")
        self._hf.decoder = decoders.Fuse()
        self._index = {c: i for i, c in enumerate(self.chars)}
        # Sorted code points let np.searchsorted do the whole lookup in one vectorised call.
        cps = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        self._order = np.argsort(cps, kind="stable")
        self._sorted_cps = cps[self._order]

    @classmethod
    def from_text(cls, text: str, chunk: int = 1 << 22) -> "CharTokenizer":
        """The vocabulary of a text: its distinct characters, in code point order."""
        seen: set[int] = set()
        for start in range(0, len(text), chunk):
            seen.update(np.unique(_codepoints(text[start:start + chunk])).tolist())
        return cls([chr(c) for c in sorted(seen)])

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def tokens(self) -> list[str]:
        """The text of token i (one character each); the same list as `chars`."""
        return self.chars

    @property
    def token_lengths(self) -> np.ndarray:
        return np.ones(self.vocab_size, np.int64)

    def count_chars(self, ids: np.ndarray) -> int:
        """How many characters `ids` (any shape) decode to: one per id."""
        return int(np.asarray(ids).size)

    def unknown_chars(self, text: str) -> list[str]:
        return sorted(set(text) - self._index.keys())

    @property
    def id_dtype(self) -> np.dtype:
        return np.dtype(np.uint16 if self.vocab_size <= 65536 else np.int32)

    def encode(self, text: str, chunk: int = 1 << 22) -> np.ndarray:
        """Text -> ids in a compact array (uint16 for vocabularies up to 65,536 characters).

        Vectorised, and done in chunks so that a 100 MB book never holds more than a few
        chunk-sized temporaries besides the result. Raises VocabularyError naming the
        characters that are not in the vocabulary.
        """
        out = np.empty(len(text), dtype=self.id_dtype)
        for start in range(0, len(text), chunk):
            cps = _codepoints(text[start:start + chunk])
            pos = np.minimum(np.searchsorted(self._sorted_cps, cps), len(self._sorted_cps) - 1)
            bad = self._sorted_cps[pos] != cps
            if bad.any():
                missing = sorted({chr(c) for c in np.unique(cps[bad])})
                raise VocabularyError(f"characters not in the vocabulary: {_show(missing)}")
            out[start:start + len(cps)] = self._order[pos]
        return out

    def encode_hf(self, text: str) -> list[int]:
        """The same ids through the Hugging Face tokenizer (small texts; used by tests and tools)."""
        unknown = self.unknown_chars(text)
        if unknown:
            raise VocabularyError(f"characters not in the vocabulary: {_show(unknown)}")
        return self._hf.encode(text).ids

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def decode_hf(self, ids) -> str:
        return self._hf.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self._hf.to_str(pretty=True), encoding="utf-8")

    def to_str(self) -> str:
        return self._hf.to_str(pretty=True)

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

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "CharTokenizer":
        return cls.from_str(read_tokenizer_file(Path(path)), str(path))


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


Tokenizer = Union[CharTokenizer, "BpeTokenizer"]
KINDS = choices(TrainConfig, "tokenizer")  # ("char", "bpe")


def build_tokenizer(kind: str, text: str, bpe_vocab: int | None = None) -> Tokenizer:
    """The tokenizer `--tokenizer` asks for, made from the book: its characters, or BPE with `bpe_vocab` tokens."""
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "bpe":
        from chargen.bpe import DEFAULT_VOCAB, BpeTokenizer

        return BpeTokenizer.train(text, DEFAULT_VOCAB if bpe_vocab is None else bpe_vocab)
    raise ConfigError(f"--tokenizer must be one of {', '.join(KINDS)}, got {kind!r}")


def tokenizer_from_str(data: str, where: str = "tokenizer.json") -> Tokenizer:
    """Rebuild either kind from tokenizer.json text, by its model type ("WordLevel": char, "BPE": bpe)."""
    try:
        kind = json.loads(data)["model"]["type"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{where}: not a Hugging Face tokenizer.json ({e}); retrain or restore the file") from None
    if kind == "WordLevel":
        return CharTokenizer.from_str(data, where)
    if kind == "BPE":
        from chargen.bpe import BpeTokenizer

        return BpeTokenizer.from_str(data, where)
    raise CheckpointError(f"{where}: model type {kind!r} is not one chargen makes (WordLevel for characters, "
                          "BPE); retrain or restore the file")


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    return tokenizer_from_str(read_tokenizer_file(Path(path)), str(path))


def read_tokenizer_file(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{p}: missing; the checkpoint is incomplete, retrain or restore it") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{p}: cannot read it ({e})") from None


def start_token(tokenizer) -> int:
    """The id fed first when there is no seed text (Generator, and exports' manifest): newline, else id 0."""
    tokens = tokenizer.tokens
    return tokens.index("\n") if "\n" in tokens else 0


def check_unknown(unknown: str) -> None:
    """ConfigError unless `unknown` is a policy for characters the vocabulary lacks: error or skip."""
    if unknown not in ("error", "skip"):
        raise ConfigError(f"--unknown must be 'error' or 'skip', got {unknown!r}")


def known_text(tokenizer, text: str, unknown: str, what: str = "text") -> tuple[str, int]:
    """`text` without the characters `tokenizer` lacks, and how many were dropped.

    `unknown` is "error" (VocabularyError naming the first 20 and the fix) or "skip" (drop them):
    the one policy for seeds (Generator) and scored texts (evaluate).
    """
    check_unknown(unknown)
    missing = tokenizer.unknown_chars(text)
    if not missing:
        return text, 0
    if unknown == "error":
        raise VocabularyError(f"the {what} has {len(missing)} distinct character{'s' * (len(missing) != 1)} the model "
                              f"never saw: {_show(missing)}; remove them or pass --unknown skip to drop them")
    kept = text.translate(dict.fromkeys(map(ord, missing)))  # str.translate: one C pass, fine for a whole book
    return kept, len(text) - len(kept)


def _show(chars: list[str], limit: int = 20) -> str:
    shown = ", ".join(repr(c) for c in chars[:limit])
    return shown + (f" and {len(chars) - limit} more" if len(chars) > limit else "")
