"""Scoring a checkpoint on any text: bits per character, next to what gzip, bz2 and lzma achieve.

The model reads the text the way it was trained to: as `rows` contiguous streams with the LSTM
state reset once and then carried through the whole text. Every character after the first is
scored exactly once:

- the targets (the text shifted by one) are cut into `rows` contiguous spans of near-equal
  length (the first `M % rows` spans are one longer), and span i is row i of every batch;
- the spans are padded to a whole number of (rows, seq_len) batches, and a 0/1 weight drops
  the padded positions from the score. The padding sits after each row's last character, so
  it never changes a scored prediction (the LSTM only looks back), and the state it leaves
  behind is never used. One model with static shapes thus covers every character, the tail
  that does not fill a batch included;
- a text too short for `batch_size` rows of `seq_len` targets uses fewer rows (down to 1).

Each row starts from zero state, so more rows cost a little: the first few characters of each
row are predicted without context. With one row the score is exactly that of feeding the whole
text through the model in one go.

With precision="int8" the same layout is stepped one column at a time by the int8 engine
(chargen/quantized.py), each row's logits scored in float64; fp32 runs the Keras model.

A compressor's output holds the whole text; a model's score is the ideal size of an arithmetic
coder's output driven by its predictions (the model itself not counted), so the two compare
directly.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from chargen import checkpoint as ckpt
from chargen import memory
from chargen.config import ModelConfig, positive_int
from chargen.corpus import read_text
from chargen.errors import CorpusError
from chargen.precision import generation_precision
from chargen.tokenizer import check_unknown, known_text

LN2 = math.log(2.0)
DEFAULT_BATCH_SIZE, DEFAULT_SEQ_LEN = 32, 256  # no backprop here, so longer steps just mean fewer calls
COMPRESSORS = {  # name shown -> bytes -> compressed bytes, each at its strongest ordinary level
    "gzip -9": lambda data: gzip.compress(data, compresslevel=9, mtime=0),
    "bz2 -9": lambda data: bz2.compress(data, compresslevel=9),
    "lzma -9": lambda data: lzma.compress(data, preset=9),
}


@dataclass(frozen=True)
class EvalResult:
    """How well a checkpoint predicts a text, and how small the usual compressors make it."""

    checkpoint: str  # the snapshot folder that was scored
    text_characters: int  # characters in the text scored (after any skipped ones were dropped)
    characters: int  # characters the model predicted: the decoded targets, i.e. the text minus its first token
    tokens: int  # tokens the model predicted (one per character for a character vocabulary)
    skipped: int  # characters dropped because the vocabulary lacks them (unknown="skip")
    rows: int  # contiguous streams the text was laid out in (each starts from zero state)
    seq_len: int  # tokens per row per model call
    total_nats: float  # summed cross-entropy of every predicted token
    nats_per_char: float
    bits_per_char: float
    gzip_bits_per_char: float | None  # 8 * compressed bytes / text_characters; None without compressors
    bz2_bits_per_char: float | None
    lzma_bits_per_char: float | None
    precision: str = "fp32"  # the engine that scored: fp32 (Keras) or int8 (chargen/quantized.py)

    def compressor_bits_per_char(self) -> dict[str, float]:
        """The compressors that ran, by the name shown in tables."""
        figures = zip(COMPRESSORS, (self.gzip_bits_per_char, self.bz2_bits_per_char, self.lzma_bits_per_char))
        return {name: bpc for name, bpc in figures if bpc is not None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(text_or_path: str | os.PathLike[str], checkpoint: str | os.PathLike[str] | None = None,
             which: str = "best", root: str | os.PathLike[str] = "checkpoints", batch_size: int = DEFAULT_BATCH_SIZE,
             seq_len: int = DEFAULT_SEQ_LEN, compressors: bool = True, unknown: str = "error",
             progress: bool | None = None, precision: str = "fp32") -> EvalResult:
    """Bits per character of a checkpoint on a text, with gzip's, bz2's and lzma's on the same text.

    `text_or_path`: a `Path` (or other path object) is read with `chargen.read_text` (a file, a
    folder of .txt files, or "-" for stdin). A `str` is read as a path when it is "-", names an
    existing file or folder, or is one word ending in ".txt" (so a mistyped file name is an
    error, not a text of a dozen characters); any other `str` is the text itself.
    `checkpoint`, `which`, `root` pick the snapshot as `chargen.load` does. `unknown="skip"`
    drops characters the vocabulary lacks instead of raising VocabularyError. `precision`: "fp32"
    (the Keras model) or "int8" (the int8 generation engine, chargen/quantized.py).
    """
    check_options(which, batch_size, seq_len, unknown)
    generation_precision(precision)
    is_path = _is_path(text_or_path)
    run = ckpt.resolve_run(checkpoint, root)  # before the text is read: a wrong name fails at once
    text = read_text(text_or_path) if is_path else text_or_path
    snap = ckpt.open_snapshot(run, which)
    tokenizer = snap.tokenizer
    text, skipped = known_text(tokenizer, text, unknown)
    ids = tokenizer.encode(text)
    if len(ids) < 2:
        raise CorpusError(f"the text has {len(ids)} character{'s' * (len(ids) != 1)} the model knows; "
                          "at least 2 are needed to predict one; give a longer text")
    show = sys.stderr.isatty() if progress is None else progress
    scorer = _StreamScorer(snap, ids, batch_size, seq_len, precision)
    total_nats = scorer.run(show)
    # Bits per *character*: count the characters the predicted tokens decode to. That is the
    # text minus what its first token decodes to (a token may span several characters).
    characters = len(text) - len(tokenizer.decode(ids[:1]))
    bpcs = _compressor_bits_per_char(text, show) if compressors else dict.fromkeys(COMPRESSORS)
    return EvalResult(
        checkpoint=str(snap.path), text_characters=len(text), characters=characters, tokens=len(ids) - 1,
        skipped=skipped, rows=scorer.rows, seq_len=seq_len, total_nats=total_nats,
        nats_per_char=total_nats / characters, bits_per_char=total_nats / LN2 / characters,
        gzip_bits_per_char=bpcs["gzip -9"], bz2_bits_per_char=bpcs["bz2 -9"], lzma_bits_per_char=bpcs["lzma -9"],
        precision=precision)


def comparison_rows(result: EvalResult, model_name: str = "model") -> list[tuple[str, float, int, str]]:
    """(method, bits/char, size in bytes, against lzma) per method, model first: what `chargen eval` shows.

    The model's size is that of an ideal arithmetic coder driven by its predictions (the first
    character and the model itself not counted).
    """
    lzma_bpc = result.lzma_bits_per_char
    rows = [(model_name, result.bits_per_char, math.ceil(result.total_nats / LN2 / 8))]
    rows += [(name, bpc, round(bpc * result.text_characters / 8)) for name, bpc in result.compressor_bits_per_char().items()]
    out = []
    for name, bpc, size in rows:
        if lzma_bpc is None or name == "lzma -9":
            versus = ""
        elif bpc < lzma_bpc:
            versus = f"beats lzma by {(1 - bpc / lzma_bpc) * 100:.1f}%"
        else:
            versus = f"{(bpc / lzma_bpc - 1) * 100:.1f}% worse than lzma"
        out.append((name, bpc, size, versus))
    return out


# ---------------------------------------------------------------- the model's score

class _StreamScorer:
    """Runs `ids` through a stateful (rows, seq_len) model as contiguous streams and sums the cross-entropy."""

    def __init__(self, snap: ckpt.Snapshot, ids: np.ndarray, batch_size: int, seq_len: int, precision: str = "fp32"):
        from chargen.net.model import build_model

        self.ids, self.seq_len = ids, seq_len
        targets = len(ids) - 1
        # Fewer rows for a short text: each row should get at least one full step of context.
        self.rows = min(batch_size, max(1, targets // seq_len))
        check_scoring_fits(snap.model, self.rows, seq_len)
        base, extra = divmod(targets, self.rows)
        self.lengths = np.full(self.rows, base, np.int64)
        self.lengths[:extra] += 1
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.num_batches = -(-int(self.lengths.max()) // seq_len)
        self.model = self.engine = None
        if precision == "int8":
            from chargen.quantized import Int8Engine

            self.engine = Int8Engine.from_weights(snap.model, snap.weights)
        else:
            self.model = build_model(snap.model, self.rows, seq_len)
            ckpt.assign_weights(self.model, snap.weights, snap.path)

    def batch(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batch k as (x, y, weight): columns [kT, (k+1)T) of every row's span, padding weighted 0."""
        cols = k * self.seq_len + np.arange(self.seq_len)
        valid = cols[None, :] < self.lengths[:, None]
        pos = np.where(valid, self.starts[:, None] + cols[None, :], 0)
        return (self.ids[pos].astype(np.int32), self.ids[pos + 1].astype(np.int32), valid.astype(np.float32))

    def run(self, show: bool) -> float:
        from tqdm.auto import tqdm

        with tqdm(total=int(self.lengths.sum()), desc="model", unit="tok", unit_scale=True, disable=not show,
                  file=sys.stderr, leave=False) as bar:
            return self._run_engine(bar) if self.engine is not None else self._run_model(bar)

    def _run_engine(self, bar) -> float:
        """The step engine over the same batches, one column at a time; cross-entropy in float64."""
        state = self.engine.zero_state(self.rows)
        rows, total = np.arange(self.rows), 0.0
        for k in range(self.num_batches):
            x, y, weight = self.batch(k)
            for t in range(self.seq_len):
                if not weight[:, t].any():  # only padding from here on
                    break
                logits, state = self.engine.step(x[:, t], state)
                z = logits.astype(np.float64)
                top = z.max(axis=1)
                nats = top + np.log(np.exp(z - top[:, None]).sum(axis=1)) - z[rows, y[:, t]]
                total += float(nats @ weight[:, t])
            bar.update(int(weight.sum()))
        return total

    def _run_model(self, bar) -> float:
        import tensorflow as tf

        from chargen.net.model import reset_state

        model = self.model
        ints = tf.TensorSpec((self.rows, self.seq_len), tf.int32)
        floats = tf.TensorSpec((self.rows, self.seq_len), tf.float32)

        @tf.function(input_signature=[ints, ints, floats])
        def summed_nats(x, y, weight):
            logits = model(x, training=False)
            nats = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            return tf.reduce_sum(nats * weight)

        reset_state(model)  # once: from here the state runs on through the whole text
        total = 0.0
        for k in range(self.num_batches):
            x, y, weight = self.batch(k)
            total += float(summed_nats(x, y, weight))  # summed in float64 here: exact over long texts
            bar.update(int(weight.sum()))
        return total


# ---------------------------------------------------------------- helpers

def _compressor_bits_per_char(text: str, show: bool) -> dict[str, float]:
    from tqdm.auto import tqdm

    data = text.encode("utf-8")
    out = {}
    with tqdm(COMPRESSORS.items(), desc="compressors", disable=not show, file=sys.stderr, leave=False) as bar:
        for name, compress in bar:
            bar.set_postfix_str(name)
            out[name] = 8 * len(compress(data)) / len(text)
    return out


def _is_path(source: Any) -> bool:
    if isinstance(source, os.PathLike):
        return True
    if not isinstance(source, str):
        raise TypeError(f"text_or_path must be a text (str) or a path (os.PathLike), got {type(source).__name__}")
    word = len(source) < 4096 and not any(ch.isspace() for ch in source)
    return source == "-" or (word and (os.path.exists(source) or source.lower().endswith(".txt")))


def check_scoring_fits(cfg: ModelConfig, rows: int, seq_len: int) -> None:
    """ConfigError unless scoring `rows` streams of `seq_len` steps could fit in the memory available now."""
    memory.check_fits(memory.evaluation_bytes(cfg, rows, seq_len),
                      f"scoring with {rows} stream{'s' * (rows != 1)} of --seq-len {seq_len}", "lower --seq-len or --batch-size")


def check_options(which: str, batch_size: int, seq_len: int, unknown: str) -> None:
    """ConfigError naming the flag for a bad --which, --batch-size, --seq-len or --unknown (no TensorFlow needed)."""
    ckpt.check_which(which)
    positive_int("batch_size", batch_size)
    positive_int("seq_len", seq_len)
    check_unknown(unknown)
