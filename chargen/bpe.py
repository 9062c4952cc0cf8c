"""Byte-pair encoding over the book's characters, trained with Hugging Face `tokenizers`.

Tokens are strings of whole characters (not bytes): the alphabet is every character of the
book, so no character of it is ever unknown and each token decodes on its own, which lets
generation stream token texts. A token's text is `tokens[i]`; decoding is concatenation.

Pre-tokenization (where merges may not cross): a word starts at every space and after every
newline, so words are " the", " thee,\\n", "ROMEO:\\n", "\\n". This is the usual convention (a
word carries the space before it, as in GPT-2 and SentencePiece) while still letting the
punctuation and line break that end a line merge into its last word. On tinyshakespeare at 512
tokens it gives 2.30 characters per token, against 2.16 for GPT-2's split of letters, digits
and punctuation and 2.22 with no pre-tokenizer at all (merges across spaces and lines), so each
step of the LSTM covers more text; and its tokens are pieces of words, not "e t" or "d, and".
It is also simple enough to find in numpy, which makes encoding a big book fast (see `encode`).
"""

from __future__ import annotations

import json

import numpy as np

from chargen.errors import CheckpointError, ConfigError
from chargen.tokenizer_base import CharIndex, Tokenizer, text_alphabet

DEFAULT_VOCAB = 512
TRAIN_SAMPLE = 8_000_000  # at most this many characters of the book are counted to learn the merges
_HASH_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so it is invertible modulo 2**64
_HASH_INVERSE = np.uint64(pow(int(_HASH_BASE), -1, 2**64))


def _hf_tokenizer(vocab: dict[str, int] | None = None, merges: list[tuple[str, str]] | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab, merges, unk_token=None) if vocab is not None else models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(" ", behavior="merged_with_next"),
                                                 pre_tokenizers.Split("\n", behavior="merged_with_previous")])
    tok.decoder = decoders.Fuse()  # concatenate token texts (the default decoder would put spaces between them)
    return tok


class BpeTokenizer(Tokenizer):
    """A BPE vocabulary: the book's characters followed by the merged tokens; token i is the text `tokens[i]`."""

    kind = "bpe"

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], where: str = "tokenizer.json"):
        tokens: list[str | None] = [None] * len(vocab)
        for text, i in vocab.items():
            if not (isinstance(text, str) and text and type(i) is int and 0 <= i < len(vocab)) or tokens[i] is not None:
                raise CheckpointError(f"{where}: vocabulary entry {text!r}: {i!r} is not a non-empty token with a "
                                      f"unique id in 0..{len(vocab) - 1}; retrain or restore the file")
            tokens[i] = text
        for a, b in merges:
            if a not in vocab or b not in vocab or a + b not in vocab:
                raise CheckpointError(f"{where}: merge {a!r} + {b!r} uses or makes a token not in the vocabulary; "
                                      "retrain or restore the file")
        self.tokens: list[str] = tokens  # type: ignore[assignment]  (all filled: the ids are 0..n-1, each once)
        alphabet = [t for t in self.tokens if len(t) == 1]
        if not alphabet:
            raise CheckpointError(f"{where}: the vocabulary has no single characters; retrain or restore the file")
        self._merges = list(merges)
        self._hf = _hf_tokenizer(dict(vocab), self._merges)
        self._alphabet = CharIndex(sorted(alphabet))  # checks and numbers the text's characters, vectorised
        # Every token as the alphabet ids of its characters, flattened: decoding and checking in numpy.
        flat = "".join(self.tokens)
        self._token_chars = self._alphabet.positions(flat, np.int64) if flat else np.zeros(0, np.int64)
        self._token_starts = np.cumsum(self.token_lengths) - self.token_lengths
        self._space = self._alphabet.index.get(" ", -1)
        self._newline = self._alphabet.index.get("\n", -1)

    # ------------------------------------------------------------ training

    @classmethod
    def train(cls, text: str, vocab_size: int = DEFAULT_VOCAB) -> "BpeTokenizer":
        """Learn `vocab_size` tokens from a text: all its characters, then the most frequent merges.

        The alphabet comes from the whole text; the merges are counted on all of it up to
        TRAIN_SAMPLE characters, and on that many spread evenly through a longer one (the pair
        statistics settle long before, and it keeps a 100 MB book to seconds). Fewer tokens come
        out when the text has no more pairs to merge. Raises ConfigError when `vocab_size`
        leaves no room for a single merge.
        """
        from tokenizers import trainers

        alphabet = text_alphabet(text)
        if not (isinstance(vocab_size, int) and vocab_size > len(alphabet)):
            raise ConfigError(f"--vocab-size {vocab_size!r} is too small: the text has {len(alphabet)} distinct "
                              f"characters, and BPE adds merged tokens to them; give at least {len(alphabet) + 1}")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, limit_alphabet=len(alphabet),
                                      special_tokens=[], show_progress=False)
        hf = _hf_tokenizer()
        hf.train_from_iterator(_training_sample(text), trainer)
        return cls.from_str(hf.to_str(), "trained tokenizer")

    # ------------------------------------------------------------ what a kind brings (chargen/tokenizer_base.py)

    def unknown_chars(self, text: str) -> list[str]:
        """Characters of `text` that are not in the alphabet (the book's characters)."""
        return self._alphabet.unknown(text)

    def with_chars(self, chars: list[str]) -> "BpeTokenizer":
        """The same merges, and each new character a token of its own after the old ids (no merge makes or uses it)."""
        if any(len(c) != 1 or c in self._alphabet.index for c in chars):
            raise ValueError(f"with_chars takes single characters the alphabet lacks, got {chars!r}")
        vocab = {t: i for i, t in enumerate(self.tokens + list(chars))}
        return BpeTokenizer(vocab, self._merges, "an extended vocabulary")

    def encode(self, text: str, chunk: int = 1 << 21) -> np.ndarray:
        """Text -> ids in a compact array, equal to the Hugging Face tokenizer's ids for the text.

        BPE works inside words, and a book repeats few distinct words many times: each chunk's
        words are found and hashed in numpy, only words not seen before go through Hugging Face,
        and their ids are gathered back in place. Each chunk's ids are checked against its text
        (a hash collision would show) and the chunk is re-encoded by Hugging Face if they differ.
        Raises VocabularyError naming characters that are not in the alphabet.
        """
        words = _WordTable(self._hf)
        # Each chunk's ids are made compact at once: a 100 MB book never holds its ids as int64.
        parts = [self._encode_piece(piece, words).astype(self.id_dtype) for piece in _pieces(text, chunk)]
        return np.concatenate(parts) if parts else np.zeros(0, self.id_dtype)

    def _encode_piece(self, piece: str, table: "_WordTable") -> np.ndarray:
        chars = self._alphabet.positions(piece, np.int64, chunk=max(len(piece), 1))  # VocabularyError if unknown
        n = len(chars)
        starts = np.flatnonzero(np.concatenate([[True], (chars[1:] == self._space) | (chars[:-1] == self._newline)]))
        ends = np.append(starts[1:], n)
        # Polynomial hash of each word from prefix sums, all arithmetic modulo 2**64: with
        # prefix[k] = sum of (c_j + 1) * B**(j + 1) over j < k, a word's is sum (c_j + 1) * B**(j - start).
        with np.errstate(over="ignore"):
            powers = np.cumprod(np.full(n, _HASH_BASE, np.uint64))
            inverse = np.cumprod(np.full(n, _HASH_INVERSE, np.uint64))
            prefix = np.concatenate([[np.uint64(0)], np.cumsum((chars.astype(np.uint64) + np.uint64(1)) * powers)])
            hashes = (prefix[ends] - prefix[starts]) * inverse[starts]
            hashes ^= (ends - starts).astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93)  # and its length
        distinct, first, which = np.unique(hashes, return_index=True, return_inverse=True)
        offsets, counts = table.lookup(distinct, lambda new: [piece[s:e] for s, e in zip(
            starts[first[new]].tolist(), ends[first[new]].tolist())])
        ids = _gather(table.ids, offsets[which], counts[which])
        if not np.array_equal(_gather(self._token_chars, self._token_starts[ids], self.token_lengths[ids]), chars):
            ids = np.asarray(self._hf.encode(piece, add_special_tokens=False).ids, np.int64)
        return ids

    # ------------------------------------------------------------ tokenizer.json

    @classmethod
    def from_str(cls, data: str, where: str = "tokenizer.json") -> "BpeTokenizer":
        """Rebuild from tokenizer.json text, refusing anything but chargen's own BPE layout (nothing is executed)."""
        try:
            obj = json.loads(data)
            model = obj["model"]
            vocab, merges = model["vocab"], model["merges"]
            if model.get("type") != "BPE" or not isinstance(vocab, dict) or not isinstance(merges, list):
                raise ValueError("not a BPE vocabulary with merges")
            pairs = []
            for m in merges:
                if not (isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m)):
                    raise ValueError(f"merge {m!r} is not a pair of strings")
                pairs.append((m[0], m[1]))
            expected = json.loads(_hf_tokenizer().to_str())
            for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder", "added_tokens", "truncation", "padding"):
                if obj.get(key) != expected[key]:
                    raise ValueError(f"its {key} is {obj.get(key)!r}, not chargen's {expected[key]!r}")
            for key in ("dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix"):
                if model.get(key) is not None:
                    raise ValueError(f"model.{key} is {model[key]!r}, chargen's is null")
            if model.get("byte_fallback") or model.get("ignore_merges"):
                raise ValueError("byte_fallback / ignore_merges are on")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{where}: not a chargen BPE vocabulary ({e}); retrain or restore the file") from None
        return cls(vocab, pairs, where)


class _WordTable:
    """The distinct words met so far (by hash, sorted) and their ids: each goes through Hugging Face once."""

    def __init__(self, hf):
        self.hf = hf
        self.hashes = np.zeros(0, np.uint64)
        self.offsets = np.zeros(0, np.int64)  # where each word's ids start in `ids`
        self.counts = np.zeros(0, np.int64)
        self.ids = np.zeros(0, np.int64)

    def lookup(self, hashes: np.ndarray, words_at) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, counts) of the words with these sorted distinct hashes; `words_at(positions)` gives new ones' texts."""
        pos = np.minimum(np.searchsorted(self.hashes, hashes), max(len(self.hashes) - 1, 0))
        new = np.flatnonzero(self.hashes[pos] != hashes) if len(self.hashes) else np.arange(len(hashes))
        if len(new):
            # One call for all of them: as pre-tokenized input each word stays a word of its own.
            encoded = self.hf.encode(words_at(new), is_pretokenized=True, add_special_tokens=False)
            counts = np.bincount(np.asarray(encoded.word_ids, np.int64), minlength=len(new))
            offsets = len(self.ids) + np.cumsum(counts) - counts
            self.ids = np.concatenate([self.ids, np.asarray(encoded.ids, np.int64)])
            merged = np.concatenate([self.hashes, hashes[new]])
            order = np.argsort(merged, kind="stable")
            self.hashes = merged[order]
            self.offsets = np.concatenate([self.offsets, offsets])[order]
            self.counts = np.concatenate([self.counts, counts])[order]
            pos = np.searchsorted(self.hashes, hashes)
        return self.offsets[pos], self.counts[pos]


def _gather(table: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """table[starts[0]:starts[0] + lengths[0]] + table[starts[1]:...] + ..., concatenated, in one gather."""
    out_starts = np.cumsum(lengths) - lengths
    return table[np.repeat(starts - out_starts, lengths) + np.arange(int(lengths.sum()))]


def _pieces(text: str, size: int):
    """The text in pieces of about `size` characters, each cut just after a newline: a word starts there,
    so encoding the pieces one by one gives the same tokens as encoding the whole text."""
    start = 0
    while start < len(text):
        cut = text.find("\n", start + size)
        end = len(text) if cut < 0 else cut + 1
        yield text[start:end]
        start = end


def _training_sample(text: str, limit: int = TRAIN_SAMPLE, size: int = 1 << 20):
    """The text in pieces; for a text over `limit` characters, `limit // size` pieces spread evenly through it."""
    if len(text) <= limit:
        yield from _pieces(text, size)
        return
    count = max(limit // size, 1)
    for k in range(count):
        start = 0 if k == 0 else text.find("\n", k * len(text) // count) + 1  # just after a newline: a word starts
        if k and start == 0:  # no newline left to cut at
            return
        end = text.find("\n", start + size)
        yield text[start:len(text) if end < 0 else end + 1]
