"""Import TensorFlow without its start-up chatter on stderr (CUDA probes on machines without a GPU).

TF_CPP_MIN_LOG_LEVEL does not silence the absl lines printed before logging is set up, so the
CLI points file descriptor 2 at /dev/null while TensorFlow loads and probes devices, then
restores it. Library users who import chargen directly are left alone.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator

from chargen.errors import ChargenError


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


@contextlib.contextmanager
def native_stderr_hidden() -> Iterator[None]:
    """Hide what native code writes on file descriptor 2 (the TFLite converter's and interpreter's
    log lines) while the block runs. If a bug (not a ChargenError) escapes, the hidden text is
    replayed after it, so nothing of a bug report is lost."""
    sys.stderr.flush()
    saved, replay = os.dup(2), False
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException as e:
            replay = not isinstance(e, (ChargenError, KeyboardInterrupt))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if replay:
                captured.seek(0)
                sys.stderr.write(captured.read().decode("utf-8", "replace"))
