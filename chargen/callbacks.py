"""Epoch-end callbacks for `chargen.train(..., callbacks=[...])`: TensorBoard logs and samples.

Each callback gets a `chargen.hooks.EpochEnd` after the epoch's snapshot is saved. Samples come
from a fresh batch-1 `Generator` built from copies of the weights, never from the training
model, so its LSTM state, weights, optimizer and dropout RNG are untouched: a run with these
callbacks is bit for bit the run without them (tested). The sampling RNG seed is derived from
the run's seed and the epoch, so the same run prints the same samples, resumed or not.

TensorFlow is imported when a callback first runs, not when this module is imported, so the
CLI can check its flags before loading it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from chargen.config import SampleConfig, positive_int
from chargen.errors import ConfigError, TensorBoardError

if TYPE_CHECKING:
    from chargen.hooks import EpochEnd

SAMPLE_LENGTH = 200
SAMPLE_TEMPERATURE = 0.8


def sample_rng_seed(train_seed: int, epoch: int, rng_seed: int | None = None) -> int:
    """The sampling seed for an epoch: a hash of (run seed or `rng_seed`, epoch), so epochs differ but repeat."""
    base = train_seed if rng_seed is None else rng_seed
    return int(np.random.SeedSequence([base, epoch]).generate_state(1, np.uint32)[0])


def epoch_sample(info: "EpochEnd", length: int = SAMPLE_LENGTH, seed_text: str = "",
                 temperature: float = SAMPLE_TEMPERATURE, rng_seed: int | None = None) -> str:
    """`length` characters continuing `seed_text`, from a batch-1 copy of the weights at this epoch.

    Characters of `seed_text` that the vocabulary lacks are dropped: a sample is not worth
    stopping a training run for.
    """
    from chargen.generate import Generator

    gen = Generator(info.model_config, info.weights(), info.tokenizer)
    return gen.generate(seed_text, length, temperature=temperature, unknown="skip",
                        rng_seed=sample_rng_seed(info.train_config.seed, info.epoch, rng_seed))


def _check_sampling(length: Any, temperature: Any, rng_seed: Any, seed_text: Any) -> None:
    positive_int("sample_length", length)
    if not isinstance(seed_text, str):
        raise ConfigError(f"seed_text must be a string, got {seed_text!r}")
    SampleConfig(length, temperature, 0, 1.0, rng_seed).validate()  # temperature and rng_seed, same rules as sampling


def print_sample(epoch: int, text: str) -> None:
    """The default `SampleEvery` output: a header line, then the sample, on stderr."""
    sys.stderr.write(f"--- sample after epoch {epoch} ---\n{text}\n")
    sys.stderr.flush()


class SampleEvery:
    """Every `n` epochs, generate `length` characters continuing `seed_text` and hand them to `write`.

    `write(epoch, text)` gets the seed text followed by its continuation; the default prints it
    on stderr under a `--- sample after epoch N ---` header.
    """

    def __init__(self, n: int, length: int = SAMPLE_LENGTH, seed_text: str = "",
                 temperature: float = SAMPLE_TEMPERATURE, rng_seed: int | None = None,
                 write: Callable[[int, str], None] | None = None):
        if not (isinstance(n, int) and not isinstance(n, bool) and n > 0):
            raise ConfigError(f"--sample-every must be a positive integer (epochs), got {n!r}")
        _check_sampling(length, temperature, rng_seed, seed_text)
        self.n, self.length, self.seed_text = n, length, seed_text
        self.temperature, self.rng_seed = temperature, rng_seed
        self.write = write or print_sample

    def __call__(self, info: "EpochEnd") -> None:
        if info.epoch % self.n == 0:
            text = epoch_sample(info, self.length, self.seed_text, self.temperature, self.rng_seed)
            self.write(info.epoch, self.seed_text + text)


def check_log_dir(log_dir: Path) -> None:
    """Refuse, creating nothing, a log folder that could not be written (a file in the way, no permission)."""
    p = log_dir
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    if not os.path.isdir(p):
        raise TensorBoardError(f"--tensorboard {log_dir}: {p} exists and is not a folder; choose another folder")
    if not os.access(p, os.W_OK | os.X_OK):
        raise TensorBoardError(f"--tensorboard {log_dir}: no permission to write in {p}; choose another folder")


class TensorBoard:
    """Write each epoch's figures and a text sample for TensorBoard (`tensorboard --logdir LOG_DIR`).

    Events go to `log_dir/<run name>/train` (scalars `loss` in nats per token, `bpc`,
    `chars_per_sec`, `lr`, and the text `sample`) and `log_dir/<run name>/validation` (`loss`,
    `bpc`), at step = epoch, so TensorBoard draws training and validation in one chart and keeps
    runs apart. Only TensorFlow's own `tf.summary.write` is used: the `tensorboard` package is
    needed to look at the logs, not to write them. `sample_length=0` writes no sample.
    """

    def __init__(self, log_dir: str | os.PathLike[str], sample_length: int = SAMPLE_LENGTH, seed_text: str = "",
                 temperature: float = SAMPLE_TEMPERATURE, rng_seed: int | None = None):
        self.log_dir = Path(log_dir)
        check_log_dir(self.log_dir)  # at once, so a bad folder fails before training starts
        if sample_length != 0:
            _check_sampling(sample_length, temperature, rng_seed, seed_text)
        self.sample_length, self.seed_text = sample_length, seed_text
        self.temperature, self.rng_seed = temperature, rng_seed
        self._writers: dict[tuple[str, str], Any] = {}  # created at the first epoch's end: nothing is written before

    def __call__(self, info: "EpochEnd") -> None:
        import tensorflow as tf

        r = info.record
        train = {"loss": r["train_loss"], "bpc": r["train_bpc"], "chars_per_sec": r.get("chars_per_sec"), "lr": r.get("lr")}
        val = {"loss": r.get("val_loss"), "bpc": r.get("val_bpc")}
        sample = None
        if self.sample_length:
            sample = self.seed_text + epoch_sample(info, self.sample_length, self.seed_text, self.temperature, self.rng_seed)
        try:
            self._write(tf, info.run_dir.name, "train", info.epoch, train, sample)
            if any(v is not None for v in val.values()):
                self._write(tf, info.run_dir.name, "validation", info.epoch, val, None)
        except (OSError, tf.errors.OpError) as e:
            raise TensorBoardError(f"{self.log_dir}: could not write TensorBoard logs ({getattr(e, 'message', e)}); "
                                   f"epoch {info.epoch} was saved, so fix the folder and continue with --resume") from None

    def _write(self, tf, run: str, part: str, epoch: int, scalars: dict[str, Any], sample: str | None) -> None:
        from tensorflow.core.framework import summary_pb2

        def metadata(plugin: str, data_class: int):
            return summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin),
                                               data_class=data_class)

        writer = self._writers.get((run, part))  # keyed by run too: one callback may serve several train() calls
        if writer is None:
            writer = self._writers[run, part] = tf.summary.create_file_writer(str(self.log_dir / run / part))
        with writer.as_default():
            for tag, value in scalars.items():
                if value is not None:
                    tf.summary.write(tag, tf.constant(value, tf.float32), step=epoch,
                                     metadata=metadata("scalars", summary_pb2.DATA_CLASS_SCALAR))
            if sample is not None:
                tf.summary.write("sample", tf.constant(as_markdown(sample)), step=epoch,
                                 metadata=metadata("text", summary_pb2.DATA_CLASS_TENSOR))
        writer.flush()  # a crash or Ctrl-C later keeps every finished epoch

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def as_markdown(text: str) -> str:
    """TensorBoard renders text as Markdown; an indented block keeps a sample's lines and spaces as they are."""
    return "\n".join("    " + line for line in text.split("\n"))


def from_markdown(block: str) -> str:
    """The sample text back from `as_markdown` (for reading logs)."""
    return "\n".join(line[4:] for line in block.split("\n"))
