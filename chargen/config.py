"""Every option and default in one place, as frozen dataclasses.

The CLI builds its flags from these fields (the `help` metadata), the checkpoint stores them
as JSON, and `validate()` is the one place where a bad value becomes a clear ConfigError.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from chargen.errors import ConfigError
from chargen.net import NAMES as CELL_NAMES


def _opt(default: Any, help: str, **extra: Any) -> Any:
    """A config field: its default, its help text and extras (`choices`: the only values allowed, `cli=False`,
    `aliases`: other flags for it, kept for commands written before it was renamed)."""
    return field(default=default, metadata={"help": help, **extra})


# Hugging Face's BPE trainer reserves room for the whole vocabulary up front and aborts the process when it
# cannot (1e9 tokens did, on 24 GiB); 2**20 is far past any useful vocabulary for an LSTM's dense layer.
MAX_BPE_VOCAB = 2**20

# Arguments whose command-line flag is not their own name (ModelConfig.vocab_size is set from the text).
FLAG_NAMES = {"bpe_vocab": "vocab_size", "init_which": "which"}


def flag(name: str) -> str:
    """The command-line flag of an argument: batch_size -> --batch-size, bpe_vocab -> --vocab-size."""
    return "--" + FLAG_NAMES.get(name, name).replace("_", "-")


def _require(ok: bool, name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {rule}, got {value!r}", arguments=(name,))


def positive_int(name: str, value: Any) -> None:
    """ConfigError "name must be a positive integer, got ..." unless `value` is one (bools are not)."""
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
             name, value, "a positive integer")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network: Embedding -> stateful recurrent layers of one cell (+dropout) -> Dense logits."""

    vocab_size: int = _opt(0, "number of distinct tokens (set from the corpus)", cli=False)
    embed: int = _opt(64, "embedding size")
    # 2x512 from benchmarks/shakespeare.py (docs/benchmarks.md): with bf16 products (--precision auto on this
    # CPU) 10 minutes on 2 idle cores hold ~5.8 epochs of tinyshakespeare and reach 1.443 nats, where 2x448 in
    # fp32 reached 1.488 after its 3 epochs.
    units: tuple[int, ...] = _opt((512, 512), "units per recurrent layer, e.g. 512,256 (or one number with --layers)")
    dropout: float = _opt(0.0, "dropout after each recurrent layer, in [0, 1)")
    # A config.json written before cells were a choice has no "cell": it means lstm, the default.
    cell: str = _opt("lstm", "the recurrent cell: lstm (Keras's LSTM) or gru (Keras's GRU, reset_after=True: "
                             "3 gate blocks to the LSTM's 4, so fewer weights for the same units)",
                     choices=CELL_NAMES)

    def validate(self) -> "ModelConfig":
        _check_choices(self)
        positive_int("vocab_size", self.vocab_size)
        positive_int("embed", self.embed)
        _require(isinstance(self.units, tuple) and len(self.units) > 0, "units", self.units,
                 "a non-empty list of positive integers")
        for u in self.units:
            _require(isinstance(u, int) and not isinstance(u, bool) and u > 0, "units", self.units,
                     "a list of positive integers")
        _require(isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0,
                 "dropout", self.dropout, "in [0, 1)")
        return self

    @property
    def layers(self) -> int:
        return len(self.units)


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Batches are `batch_size` contiguous streams, `seq_len` characters at a time."""

    # The budget: at most one of epochs, steps, minutes (chargen/budget.py); none given means 10 epochs.
    epochs: int | None = _opt(None, "passes over the training text (default: 10, unless --steps or --minutes "
                                    "is the budget instead)")
    steps: int | None = _opt(None, "budget in training steps (batches) instead of --epochs; it may end mid-epoch, "
                                   "which validates and saves a resumable snapshot")
    minutes: float | None = _opt(None, "budget in minutes of training instead of --epochs; the cosine curve follows "
                                       "the time used, so a time budget is not bit-reproducible")
    save_every: float = _opt(30.0, "minutes between resumable mid-epoch snapshots ('last' moves; 'best' only at "
                                   "validated epoch or budget ends); 0 = only at epoch ends")
    batch_size: int = _opt(32, "parallel contiguous streams (rows of each batch)")
    seq_len: int = _opt(64, "characters (tokens, with --tokenizer bpe) per stream per step (truncated backprop length)")
    # From benchmarks/shakespeare.py (2x512, 2 cores): a constant 3e-3 reached 1.538 nats after 2
    # epochs against 1.559 at 2e-3; a cosine curve over 3 epochs then reached 1.464 against 1.506
    # constant. (At 2x448, 4e-3 gave 1.484 against 1.488: within seed noise, so 3e-3 stays.)
    lr: float = _opt(3e-3, "Adam learning rate (the peak, with --lr-decay cosine)")
    lr_decay: str = _opt("cosine", "learning-rate schedule over the whole run: cosine (from --lr down to --lr x "
                                   "--lr-final at the budget's end) or none (constant)",
                         choices=("cosine", "none"))
    lr_final: float = _opt(0.1, "with --lr-decay cosine: the last step's learning rate as a fraction of --lr, in [0, 1]")
    clip: float = _opt(5.0, "clip gradients to this global norm (0 = off)")
    val_fraction: float = _opt(0.1, "fraction of the text held out at its end for validation, in [0, 0.5]")
    seed: int | None = _opt(None, "random seed; the same seed gives the same run (default: a random one, recorded)")
    kernel: str = _opt("auto", "the recurrent layers' code for training: fast (chargen's CPU kernel), keras (the "
                               "stock Keras layer: cuDNN on a GPU), or auto (keras when a GPU is visible, else fast); "
                               "weights are the same either way. --lstm is another name for it",
                       choices=("auto", "fast", "keras"), aliases=("--lstm",))
    tokenizer: str = _opt("char", "char (one token per character) or bpe (byte-pair merges of the book's characters, "
                                  "trained on it); bits per character are reported either way",
                          choices=("char", "bpe"))
    bpe_vocab: int | None = _opt(None, "with --tokenizer bpe: tokens in the vocabulary, the book's characters "
                                       "included (default: 512)")
    precision: str = _opt("auto", "number format of training's matrix products: bf16 (bfloat16 products in the "
                                  "recurrent layers; weights, state and loss stay float32; needs --kernel fast), fp32, or auto "
                                  "(bf16 where the CPU has native BF16 and layers have 256+ units, else fp32); "
                                  "checkpoints are float32 either way",
                          choices=("auto", "bf16", "fp32"))
    distribute: str = _opt("none", "train on several devices: none, mirrored (every GPU of this machine, each taking "
                                   "batch-size/GPUs of the streams) or multiworker (machines listed in TF_CONFIG); "
                                   "the maths is the same as on one device",
                           choices=("none", "mirrored", "multiworker"))

    def validate(self) -> "TrainConfig":
        _check_choices(self)
        budgets = [name for name in ("epochs", "steps", "minutes") if getattr(self, name) is not None]
        if len(budgets) > 1:
            raise ConfigError(f"{' and '.join(budgets)} are alternatives: give one budget (epochs, steps or minutes)",
                              arguments=("epochs", "steps", "minutes"))
        for name in ("epochs", "steps"):
            if getattr(self, name) is not None:
                positive_int(name, getattr(self, name))
        for name in ("batch_size", "seq_len"):
            positive_int(name, getattr(self, name))
        _require(self.minutes is None or _is_real(self.minutes) and self.minutes > 0, "minutes", self.minutes,
                 "a positive number")
        _require(_is_real(self.save_every) and self.save_every >= 0, "save_every", self.save_every,
                 "a number of minutes >= 0 (0: only at epoch ends)")
        _require(_is_real(self.lr) and self.lr > 0, "lr", self.lr, "a positive number")
        _require(_is_real(self.clip) and self.clip >= 0, "clip", self.clip, "a number >= 0")
        _require(_is_real(self.lr_final) and 0 <= self.lr_final <= 1, "lr_final", self.lr_final, "in [0, 1]")
        _require(_is_real(self.val_fraction) and 0.0 <= self.val_fraction <= 0.5,
                 "val_fraction", self.val_fraction, "in [0, 0.5]")
        _require(self.seed is None or (isinstance(self.seed, int) and 0 <= self.seed < 2**31),
                 "seed", self.seed, "an integer in [0, 2**31)")
        if self.bpe_vocab is not None:
            if self.tokenizer != "bpe":
                raise ConfigError(f"bpe_vocab {self.bpe_vocab!r} is for tokenizer 'bpe' (a char vocabulary is the "
                                  "book's characters); set tokenizer 'bpe' or drop bpe_vocab",
                                  arguments=("bpe_vocab", "tokenizer"))
            _require(isinstance(self.bpe_vocab, int) and not isinstance(self.bpe_vocab, bool)
                     and 2 <= self.bpe_vocab <= MAX_BPE_VOCAB, "bpe_vocab", self.bpe_vocab,
                     f"an integer from 2 (the book's distinct characters + 1 at least) to {MAX_BPE_VOCAB:,}")
        return self


@dataclass(frozen=True)
class SampleConfig:
    """How to pick each next character."""

    length: int = _opt(500, "characters to generate")
    temperature: float = _opt(0.8, "softmax temperature; 0 = always the most likely character")
    top_k: int = _opt(0, "sample only among the k most likely characters (0 = all)")
    top_p: float = _opt(1.0, "sample only from the smallest set with this total probability, in (0, 1]")
    rng_seed: int | None = _opt(None, "random seed for sampling; the same seed gives the same text")

    def validate(self) -> "SampleConfig":
        _require(isinstance(self.length, int) and self.length >= 0, "length", self.length, "an integer >= 0")
        _require(_is_real(self.temperature) and self.temperature >= 0, "temperature", self.temperature, ">= 0")
        _require(isinstance(self.top_k, int) and self.top_k >= 0, "top_k", self.top_k, "an integer >= 0")
        _require(_is_real(self.top_p) and 0 < self.top_p <= 1, "top_p", self.top_p, "in (0, 1]")
        _require(self.rng_seed is None or (isinstance(self.rng_seed, int) and self.rng_seed >= 0),
                 "rng_seed", self.rng_seed, "an integer >= 0")
        return self


def choices(cls: type, name: str) -> tuple[str, ...]:
    """The values field `name` of config class `cls` allows (its `choices` metadata): the CLI and validate() use it."""
    return next(f.metadata["choices"] for f in fields(cls) if f.name == name)


def _check_choices(cfg: Any) -> None:
    for f in fields(cfg):
        allowed = f.metadata.get("choices")
        if allowed is not None:
            _require(getattr(cfg, f.name) in allowed, f.name, getattr(cfg, f.name), "one of " + ", ".join(allowed))


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def to_dict(cfg: Any) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# Fields that had another name before, in checkpoints and library calls: TrainConfig.lstm is now kernel
# (it chooses the training code of any cell).
RENAMED = {"lstm": "kernel"}


def renamed(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """`options` with old field names (RENAMED) given their new ones; ConfigError where both are given."""
    names = {f.name for f in fields(cls)}
    out = dict(options)
    for old, new in RENAMED.items():
        if old in out and new in names and old not in names:
            if new in out:
                raise ConfigError(f"{old} is another name for {new}: give one of them", arguments=(old, new))
            out[new] = out.pop(old)
    return out


def from_dict(cls: type, data: Any, where: str) -> Any:
    """Rebuild a config from checkpoint JSON, refusing unknown keys and wrong types (no code runs)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    data = renamed(cls, data)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}")
    kwargs = {}
    for name, value in data.items():
        if name == "units":
            if not isinstance(value, list):
                raise ConfigError(f"{where}: 'units' must be a list of integers, got {value!r}")
            value = tuple(value)
        kwargs[name] = value
    try:
        cfg = cls(**kwargs)
    except TypeError as e:  # pragma: no cover - all keys were checked above
        raise ConfigError(f"{where}: {e}") from None
    return cfg.validate()


def cli_fields(cls: type) -> list[dataclasses.Field]:
    """The fields that become CLI flags, in declaration order."""
    return [f for f in fields(cls) if f.metadata.get("cli", True)]


def parse_units(text: str, layers: int | None) -> tuple[int, ...]:
    """'512,256' -> (512, 256); '512' with layers=3 -> (512, 512, 512)."""
    try:
        units = tuple(int(p) for p in str(text).split(","))
    except ValueError:
        raise ConfigError(f"--units must be integers separated by commas, e.g. 512,256; got {text!r}") from None
    if layers is not None:
        positive_int("layers", layers)
        if len(units) == 1:
            units = units * layers
        elif len(units) != layers:
            raise ConfigError(f"--layers {layers} does not match --units {text} ({len(units)} layers); give one of them")
    return units


@dataclass(frozen=True)
class ServeConfig:
    """How `chargen serve` listens and what it allows one client (chargen.serve; docs/serving.md)."""

    host: str = _opt("127.0.0.1", "address to listen on; 127.0.0.1 is this machine only, 0.0.0.0 every network "
                                  "it is on (see docs/serving.md before using it)")
    port: int = _opt(8000, "TCP port; 0 picks a free one (the address is printed)")
    max_concurrent: int = _opt(64, "generations in progress at once; more get 503 with Retry-After")
    max_length: int = _opt(2000, "most characters one request may ask for")
    max_sessions: int = _opt(1000, "saved sessions kept; the least recently used is dropped beyond it")
    max_body: int = _opt(65536, "largest request body in bytes (the seed is in it); larger gets 413")
    # 32: at 2x512 one product of 32 rows costs ~70% of two of 16 (benchmarks/serve_load.py, docs/serving.md);
    # a lone client pays for the padding (a 32-row product per character instead of one row's).
    block_rows: int = _opt(32, "rows stepped in one product; every block has this many (padded), so a row's "
                               "arithmetic, and a seeded text, never depend on the other clients")
    flush_ms: int = _opt(20, "a stream sends what it has at most this often, in milliseconds (its first piece at once)")
    precision: str = _opt("fp32", "fp32 (the exact engine) or int8 (int8 weights run by LiteRT: several times "
                                  "faster, close but not equal; converted once per snapshot and cached)",
                          choices=("fp32", "int8"))

    def validate(self) -> "ServeConfig":
        _require(isinstance(self.host, str) and self.host.strip() != "", "host", self.host, "an address such as 127.0.0.1")
        _require(isinstance(self.port, int) and not isinstance(self.port, bool) and 0 <= self.port <= 65535,
                 "port", self.port, "an integer in [0, 65535]")
        for name in ("max_concurrent", "max_length", "max_sessions", "max_body", "block_rows"):
            positive_int(name, getattr(self, name))
        _require(isinstance(self.flush_ms, int) and not isinstance(self.flush_ms, bool) and 0 <= self.flush_ms <= 10000,
                 "flush_ms", self.flush_ms, "an integer in [0, 10000]")
        _check_choices(self)
        return self
