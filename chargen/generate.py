"""Streaming generation from a checkpoint.

A model trained with batch B cannot take batch 1 (its state variables are (B, units)), so the
Generator builds a batch-size-1 copy of the network, copies the weights in, and primes its
state with the whole seed in one call. After that it feeds one token at a time: a character,
or with a BPE vocabulary (`--tokenizer bpe`) a piece of text such as " the". The per-token
steps run in numpy on the same weights (chargen.net.numpy_engine): at batch 1 a step is
a few matrix-vector products, and skipping TensorFlow's per-call overhead makes it several
times faster. Both paths agree to ~1e-6 (tested). With precision="int8" the per-token steps run
on int8 weights instead (chargen/quantized.py: LiteRT, close to fp32 but not equal); the seed is
still primed by the fp32 model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from chargen import checkpoint as ckpt
from chargen import memory
from chargen.config import ModelConfig, SampleConfig
from chargen.errors import ConfigError
from chargen.cores import Stepper
from chargen.net import get_cell
from chargen.net.layout import zero_state
from chargen.net.model import State, build_model, check_state, get_state, set_state, state_shapes
from chargen.net.numpy_engine import NumpyEngine
from chargen.precision import generation_precision
from chargen.quantized import Int8Engine
from chargen.sampling import pick
from chargen.stops import StopStrings
from chargen.tokenizer import Tokenizer, check_unknown, known_text, start_token


class Generator:
    """A batch-size-1 stateful model that continues text. Holds one state per layer: the LSTM's (h, c), the GRU's (h,)."""

    def __init__(self, model_config: ModelConfig, weights: list[np.ndarray], tokenizer: Tokenizer,
                 source: Path | None = None, precision: str = "fp32"):
        self.precision = generation_precision(precision)
        self.config, self.tokenizer, self.source = model_config, tokenizer, source
        self.model = build_model(model_config, batch_size=1, seq_len=None)
        ckpt.assign_weights(self.model, weights, source or Path("<weights>"))
        self.cell = get_cell(model_config.cell)
        if precision == "int8":  # the same step interface, on int8 weights (converted once, then cached)
            self.stepper = Int8Engine.from_weights(model_config, self.model.get_weights())
        else:  # on two cores where two are ours and it pays
            self.stepper = Stepper(NumpyEngine.from_weights(model_config, self.model.get_weights()))
        self._state = self.zero_state()
        self._logits: np.ndarray | None = None  # distribution over the next token, if known

    # ------------------------------------------------------------ state

    def zero_state(self, rows: int = 1) -> State:
        """Per layer, the cell's state tensors (h, c or h) as zeros of shape (rows, units): the start of text."""
        return zero_state(self.config.cell, self.config.units, rows)

    @property
    def state(self) -> State:
        """Per layer the cell's state, (h, c) or (h,), numpy float32 arrays of shape (1, units); a copy.

        It is everything the Generator knows about the text so far: the next token's
        distribution is a function of the top layer's h. So `set_state(s)` with an `s` taken
        earlier (from this Generator or another with the same weights) continues exactly as
        from where `s` was taken: the same text at temperature 0, the same draws with the same
        rng_seed. An all-zero state means "start of text", as after reset(): nothing has been
        read, so the start token (newline) is fed before the first token is chosen. (A state
        that has read anything is never exactly zero.)
        """
        return [tuple(a.copy() for a in layer) for layer in self._state]

    def set_state(self, state: State) -> None:
        """Replace the state and continue from it; refuses the wrong layer count, shape, dtype or NaN with a StateError."""
        self._take(check_state(state, state_shapes(self.config, 1), self.cell.state))

    def reset(self) -> None:
        """Back to the start of text: zero state, the start token fed before the next token."""
        self._take(self.zero_state())

    def _take(self, state: State) -> None:
        """Adopt `state` and the next-token logits it implies (none at the start of text)."""
        self._state = state
        start = not any(a.any() for layer in state for a in layer)
        self._logits = None if start else self.stepper.logits(state[-1][0])[0]

    # ------------------------------------------------------------ feeding text

    def prime(self, text: str, unknown: str = "error") -> np.ndarray | None:
        """Run the text through the batch-1 model in one call, from the current state.

        Returns the logits for the token after it (None for an empty text). `unknown`
        is "error" (default) or "skip" for characters not in the vocabulary (with BPE: not in its
        alphabet, the characters of the book it was trained on).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = self._encode(text, unknown)
        if len(ids) == 0:
            return self._logits
        set_state(self.model, self._state)
        self.model(ids[None, :].astype(np.int32), training=False)
        # The logits from the state, as set_state and every numpy step compute them: the same bits
        # whichever way the state was reached.
        self._take(get_state(self.model))
        return self._logits

    def _encode(self, text: str, unknown: str) -> np.ndarray:
        return self.tokenizer.encode(known_text(self.tokenizer, text, unknown, "seed")[0]).astype(np.int32)

    def next_logits(self) -> np.ndarray:
        """Logits over the next token. At the start of text (zero state) the start token (newline) is fed first."""
        if self._logits is None:
            logits, self._state = self.stepper.step(np.array([start_token(self.tokenizer)]), self._state)
            self._logits = logits[0]
        return self._logits

    # ------------------------------------------------------------ generating

    def stream(self, seed: str = "", length: int | None = None, temperature: float | None = None,
               top_k: int | None = None, top_p: float | None = None, rng_seed: int | None = None,
               unknown: str = "error", stop: Sequence[str] = (), *, sample: SampleConfig | None = None
               ) -> Iterator[str]:
        """Prime with `seed`, then yield the text of each token as it is generated, `length` characters in all.

        The sampling options are a SampleConfig's (length 500, temperature 0.8, top_k 0 = all,
        top_p 1.0, rng_seed None = random, unless given): one by one, or whole as `sample=`, not both.

        With the char tokenizer each piece is one character and there are exactly `length`. With
        BPE a piece is a token's text (" the", "ing", ":\n"), and generation stops with the token
        that reaches `length` characters, so the text can run over by a few characters (less
        than the longest token). The state moves on with the text: a later call continues from
        where this one stopped. `stop` strings end it early, with the token that completes one,
        which is yielded (chargen.stops). Arguments are checked when it is called, before any
        text is made.
        """
        cfg = _sample_config(seed, unknown, sample, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                             rng_seed=rng_seed)
        return self._stream(seed, cfg, unknown, StopStrings(stop))

    def _stream(self, seed: str, cfg: SampleConfig, unknown: str, stops: StopStrings) -> Iterator[str]:
        self.prime(seed, unknown)
        tokens = self.tokenizer.tokens
        for idx, _, logits, state in self._steps(self.next_logits()[None, :], self._state, cfg):
            self._state, self._logits = state, logits[0]
            piece = tokens[int(idx[0])]
            yield piece
            if stops.hit(piece):
                return

    def stream_many(self, seed: str = "", num_samples: int = 16, length: int | None = None,
                    temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                    rng_seed: int | None = None, unknown: str = "error", stop: Sequence[str] = (), *,
                    sample: SampleConfig | None = None) -> Iterator[list[str]]:
        """`num_samples` independent continuations of one seed, generated together (sampling options as `stream`'s).

        Yields one list of `num_samples` pieces of text per step (characters, or token texts with
        BPE; a sample that already has `length` characters, or ended with a `stop` string, gets "" while
        others catch up; when every sample has stopped, so does this). The seed is
        primed once and its state copied to every row; each step then costs little more than a
        single stream's (at batch 1 reading the weights is the bottleneck, not arithmetic). The
        Generator's own state is left as it was. Arguments, and that the rows fit in memory,
        are checked when it is called.
        """
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ConfigError(f"num_samples must be a positive integer, got {num_samples!r}", arguments=("num_samples",))
        cfg = _sample_config(seed, unknown, sample, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                             rng_seed=rng_seed)
        check_sampling_fits(self.config, num_samples, cfg.length)
        stops = [StopStrings(stop) for _ in range(num_samples)]
        return self._stream_many(seed, num_samples, cfg, unknown, stops)

    def _stream_many(self, seed: str, num_samples: int, cfg: SampleConfig, unknown: str,
                     stops: list[StopStrings]) -> Iterator[list[str]]:
        stopped = [False] * num_samples
        saved = self._state, self._logits
        try:
            self.prime(seed, unknown)
            logits = np.repeat(self.next_logits()[None, :], num_samples, axis=0)
            state = [tuple(np.repeat(a, num_samples, 0) for a in layer) for layer in self._state]
        finally:
            self._state, self._logits = saved
        tokens = self.tokenizer.tokens
        for idx, live, _, _ in self._steps(logits, state, cfg):
            pieces = [tokens[i] if on and not done else "" for i, on, done in zip(idx.tolist(), live.tolist(), stopped)]
            yield pieces
            stopped = [done or bool(piece and watch.hit(piece)) for done, piece, watch in zip(stopped, pieces, stops)]
            if all(stopped):
                return

    def _steps(self, logits: np.ndarray, state: State, cfg: SampleConfig):
        """Pick a token per row, feed it, repeat until every row has `cfg.length` characters.

        Yields (ids, rows still short of `length` before this step, next logits, state) per step.
        With one character per token that is exactly `length` steps.
        """
        rng = np.random.default_rng(cfg.rng_seed)
        token_lengths = self.tokenizer.token_lengths
        if (token_lengths == 1).all():  # one character per token: exactly `length` steps, no counting per step
            live = np.ones(len(logits), bool)
            for _ in range(cfg.length):
                idx = pick(logits, cfg, rng)
                logits, state = self.stepper.step(idx, state)
                yield idx, live, logits, state
            return
        have = np.zeros(len(logits), np.int64)  # characters generated so far, per row
        while (have < cfg.length).any():
            live = have < cfg.length
            idx = pick(logits, cfg, rng)
            have += np.where(live, token_lengths[idx], 0)
            logits, state = self.stepper.step(idx, state)
            yield idx, live, logits, state

    def generate(self, seed: str = "", length: int | None = None, **kwargs) -> str:
        """The text `stream` yields, joined (the same arguments)."""
        return "".join(self.stream(seed, length, **kwargs))

    def keras_model(self):
        """A new batch-1 stateful Keras model of stock layers with these weights, ending in next-token probabilities:
        what `chargen export --format keras` writes (chargen/exporters/keras.py). A copy: changing it, or its
        state, leaves the Generator as it was."""
        from chargen.exporters.keras import keras_model

        return keras_model(self.config, self.model.get_weights())


def check_sampling_fits(cfg: ModelConfig, num_samples: int, length: int) -> None:
    """ConfigError unless `num_samples` rows of `length` characters could fit in the memory available now."""
    memory.check_fits(memory.sampling_bytes(cfg, num_samples, length),
                      f"generating {num_samples:,} samples of length {length:,} together", "lower num_samples",
                      ("num_samples", "length"))


def _sample_config(seed: object, unknown: str, sample: object, **options: object) -> SampleConfig:
    """The checked sampling options: `sample` whole, or a SampleConfig of the `options` given (not None).

    TypeError for a seed that is not text, a `sample` that is not a SampleConfig or one given with
    separate options; ConfigError for a bad option.
    """
    if not isinstance(seed, str):
        raise TypeError(f"seed must be a str (\"\" for none), got {type(seed).__name__}")
    check_unknown(unknown)
    given = {k: v for k, v in options.items() if v is not None}
    if sample is None:
        return SampleConfig(**given).validate()
    if not isinstance(sample, SampleConfig):
        raise TypeError(f"sample must be a chargen.SampleConfig, got {type(sample).__name__}")
    if given:
        raise TypeError(f"give the sampling options whole (sample=) or one by one, not both: {', '.join(given)} "
                        "given with sample")
    return sample.validate()


def load(checkpoint: str | os.PathLike[str] | None = None, which: str = "best",
         root: str | os.PathLike[str] = "checkpoints", precision: str = "fp32") -> Generator:
    """A Generator from a run folder, a snapshot folder, or a run name under `root`.

    None picks the most recently written run. `which` is "best" (lowest validation loss)
    or "last". `precision` is "fp32" (the exact numpy engine) or "int8" (chargen/quantized.py).
    """
    generation_precision(precision)
    snap = ckpt.open_snapshot(checkpoint, which, root)
    return Generator(snap.model, snap.weights, snap.tokenizer, snap.path, precision)
