"""Choosing a tokenizer, reading one back, and what to do with characters a vocabulary lacks.

`build_tokenizer` makes the kind `--tokenizer` asks for from the book (chargen/char_tokenizer.py:
one token per character; chargen/bpe.py: byte-pair merges of its characters) and
`tokenizer_from_str` / `load_tokenizer` read either back from tokenizer.json by its model type.
Both kinds share chargen/tokenizer_base.py's interface: vocab_size, tokens (the text of token i),
token_lengths, encode, decode, count_chars, unknown_chars, id_dtype, to_str/from_str, save/load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from chargen.bpe import DEFAULT_VOCAB, BpeTokenizer
from chargen.char_tokenizer import CharTokenizer
from chargen.config import TrainConfig, choices
from chargen.errors import CheckpointError, ConfigError, VocabularyError
from chargen.tokenizer_base import Tokenizer, read_tokenizer_file, show

__all__ = ["BpeTokenizer", "CharTokenizer", "KINDS", "Tokenizer", "build_tokenizer", "check_unknown", "known_text",
           "load_tokenizer", "read_tokenizer_file", "start_token", "tokenizer_from_str"]

KINDS = choices(TrainConfig, "tokenizer")  # ("char", "bpe")
BY_MODEL_TYPE = {"WordLevel": CharTokenizer, "BPE": BpeTokenizer}  # tokenizer.json's model type -> the kind


def build_tokenizer(kind: str, text: str, bpe_vocab: int | None = None) -> Tokenizer:
    """The tokenizer `--tokenizer` asks for, made from the book: its characters, or BPE with `bpe_vocab` tokens."""
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "bpe":
        return BpeTokenizer.train(text, DEFAULT_VOCAB if bpe_vocab is None else bpe_vocab)
    raise ConfigError(f"tokenizer must be one of {', '.join(KINDS)}, got {kind!r}", arguments=("tokenizer",))


def tokenizer_from_str(data: str, where: str = "tokenizer.json") -> Tokenizer:
    """Rebuild either kind from tokenizer.json text, by its model type ("WordLevel": char, "BPE": bpe)."""
    try:
        model_type = json.loads(data)["model"]["type"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{where}: not a Hugging Face tokenizer.json ({e}); retrain or restore the file") from None
    kind = BY_MODEL_TYPE.get(model_type) if isinstance(model_type, str) else None
    if kind is None:
        raise CheckpointError(f"{where}: model type {model_type!r} is not one chargen makes (WordLevel for characters, "
                              "BPE); retrain or restore the file")
    return kind.from_str(data, where)


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    return tokenizer_from_str(read_tokenizer_file(Path(path)), str(path))


def start_token(tokenizer: Tokenizer) -> int:
    """The id fed first when there is no seed text (Generator, and exports' manifest): newline, else id 0."""
    tokens = tokenizer.tokens
    return tokens.index("\n") if "\n" in tokens else 0


def check_unknown(unknown: str) -> None:
    """ConfigError unless `unknown` is a policy for characters the vocabulary lacks: error or skip."""
    if unknown not in ("error", "skip"):
        raise ConfigError(f"unknown must be 'error' or 'skip', got {unknown!r}", arguments=("unknown",))


def known_text(tokenizer: Tokenizer, text: str, unknown: str, what: str = "text") -> tuple[str, int]:
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
                              f"never saw: {show(missing)}; remove them or pass --unknown skip to drop them")
    kept = text.translate(dict.fromkeys(map(ord, missing)))  # str.translate: one C pass, fine for a whole book
    return kept, len(text) - len(kept)
