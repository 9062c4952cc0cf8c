"""chargen: character-level text generation with stateful LSTMs on TensorFlow/Keras 3."""

from chargen.config import ModelConfig, SampleConfig, TrainConfig
from chargen.errors import (ChargenError, CheckpointError, ConfigError, CorpusError, StateError,
                            VocabularyError)

__version__ = "0.1.0"

__all__ = ["train", "load", "Generator", "ModelConfig", "TrainConfig", "SampleConfig", "ChargenError",
           "ConfigError", "CorpusError", "CheckpointError", "StateError", "VocabularyError", "TrainResult",
           "TrainingInterrupted", "TrainingDiverged", "read_text", "CharTokenizer", "Streams", "export",
           "ExportError"]


def __getattr__(name: str):
    # TensorFlow is imported only when something that needs it is used: `import chargen` stays instant.
    lazy = {"train": "chargen.trainer", "TrainResult": "chargen.trainer", "TrainingInterrupted": "chargen.errors",
            "TrainingDiverged": "chargen.errors", "load": "chargen.generate", "Generator": "chargen.generate",
            "read_text": "chargen.corpus", "CharTokenizer": "chargen.tokenizer", "Streams": "chargen.streams",
            "export": "chargen.exporting", "ExportError": "chargen.errors"}
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module 'chargen' has no attribute {name!r}")
