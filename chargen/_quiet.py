"""Import TensorFlow without its start-up chatter on stderr (CUDA probes on machines without a GPU).

TF_CPP_MIN_LOG_LEVEL does not silence the absl lines printed before logging is set up, so the
CLI points file descriptor 2 at /dev/null while TensorFlow loads and probes devices, then
restores it. Library users who import chargen directly are left alone.
"""

from __future__ import annotations

import os
import sys


def import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe prints here on CPU-only machines
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
