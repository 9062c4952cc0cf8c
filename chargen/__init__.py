"""chargen: character-level text generation with stateful LSTMs or GRUs on TensorFlow/Keras 3."""

from chargen.config import ModelConfig, SampleConfig, TrainConfig
from chargen.errors import (ChargenError, CheckpointError, ConfigError, CorpusError, ExportError, MissingExtra,
                            RunLockedError, StateError, TensorBoardError, TrainingDiverged, TrainingInterrupted,
                            VocabularyError)

__version__ = "0.1.0"

__all__ = ["train", "load", "Generator", "ModelConfig", "TrainConfig", "SampleConfig", "TrainResult", "EpochEnd",
           "StepEnd", "read_text", "CharTokenizer", "BpeTokenizer", "Streams", "export", "evaluate", "EvalResult",
           "history", "TensorBoard", "SampleEvery",
           # every error chargen raises (chargen/errors.py), so `except chargen.TensorBoardError` works
           "ChargenError", "ConfigError", "CorpusError", "CheckpointError", "StateError", "VocabularyError",
           "TrainingInterrupted", "TrainingDiverged", "ExportError", "TensorBoardError", "MissingExtra",
           "RunLockedError"]


def __getattr__(name: str):
    # TensorFlow is imported only when something that needs it is used: `import chargen` stays instant.
    lazy = {"train": "chargen.trainer", "TrainResult": "chargen.trainer", "EpochEnd": "chargen.hooks",
            "StepEnd": "chargen.hooks",
            "load": "chargen.generate", "Generator": "chargen.generate",
            "read_text": "chargen.corpus", "CharTokenizer": "chargen.char_tokenizer", "BpeTokenizer": "chargen.bpe",
            "Streams": "chargen.streams",
            "export": "chargen.exporters",  # not chargen/export/: importing it would replace this function
            # not chargen/evaluate.py: importing a submodule of that name would replace this function
            "evaluate": "chargen.evaluation", "EvalResult": "chargen.evaluation",
            # not chargen/history.py, for the same reason
            "history": "chargen.curves", "TensorBoard": "chargen.callbacks", "SampleEvery": "chargen.callbacks"}
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module 'chargen' has no attribute {name!r}")
