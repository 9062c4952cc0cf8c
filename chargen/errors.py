"""The errors users see. The CLI turns any ChargenError into one line on stderr and exit code 2."""

from __future__ import annotations

from typing import Sequence


class ChargenError(Exception):
    """Base class: bad input or a problem the user can fix. Never a bug.

    A message names the arguments at fault as a library caller spells them (`batch_size`), and
    `arguments` lists the ones it names, so that the command line can say its flags instead
    (`--batch-size`: chargen.cli.said).
    """

    def __init__(self, *args: object, arguments: Sequence[str] = ()):
        super().__init__(*args)
        self.arguments = tuple(arguments)


class ConfigError(ChargenError, ValueError):
    """An option is out of range or of the wrong type."""


class CorpusError(ChargenError):
    """The training text cannot be read or is unusable."""


class CheckpointError(ChargenError):
    """A checkpoint is missing, incomplete, corrupted or of an unknown format."""


class StateError(ChargenError, ValueError):
    """An LSTM state of the wrong layer count, shape, dtype or with NaN/Inf values."""


class VocabularyError(ChargenError):
    """Text contains characters the model's vocabulary does not have."""


class TrainingInterrupted(ChargenError):
    """Ctrl-C, SIGTERM or SIGHUP (or StepEnd.stop()): a resumable checkpoint was saved at the end of the step.

    `signum` is the signal (None for a stop a callback asked for); `resume_command` continues the run.
    """

    def __init__(self, message: str, signum: int | None = None, resume_command: str | None = None):
        super().__init__(message)
        self.signum, self.resume_command = signum, resume_command


class TrainingDiverged(ChargenError):
    """The loss or the weights became NaN/Inf (or the loss exploded); nothing bad was saved, `last` is kept."""


class ExportError(ChargenError):
    """An export cannot be written where asked (the folder exists, no permission, disk full)."""


class TensorBoardError(ChargenError):
    """The TensorBoard log folder cannot be created or written."""


class MissingExtra(ChargenError):
    """An optional part of chargen is used without the packages of its extra (e.g. `chargen serve` without [serve])."""


class RunLockedError(ChargenError):
    """Another process is training this run (it holds RUN/train.lock); the message names it."""
