import os
import sys
from pathlib import Path

# Before numpy is imported: OpenBLAS reads these once, when it loads (set later they do nothing).
# Tests run numpy's BLAS as the CLI does (chargen.cli.main): one thread unless chargen.cores asks
# for two, and an idle worker that sleeps soon instead of spinning for ~0.1 s.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TINY = dict(units=(24, 16), embed=8, batch_size=4, seq_len=16)


def pytest_configure(config):
    from chargen._quiet import import_tensorflow_quietly

    import_tensorflow_quietly()


@pytest.fixture(scope="session")
def small_text() -> str:
    """A few kB of varied text (generated here), long enough for tiny batches and validation."""
    rng = np.random.default_rng(0)
    words = ["the", "state", "of", "each", "row", "carries", "on", "stream", "book", "király", "中文", "ünï"]
    lines = [" ".join(rng.choice(words, size=8)) + "." for _ in range(120)]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, small_text):
    """A tiny model trained for 2 epochs; reused by tests that only read it."""
    import chargen

    d = tmp_path_factory.mktemp("run")
    book = d / "book.txt"
    book.write_text(small_text, encoding="utf-8")
    result = chargen.train(book, root=d / "checkpoints", epochs=2, seed=3, progress=False, **TINY)
    return result


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """One headless Chromium for the session (tests/browser.py); skipped only where none is installed."""
    from browser import require_browser, start_browser

    require_browser()
    driver = start_browser(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def pytest_terminal_summary(terminalreporter):
    from browser import SAVED

    if SAVED:
        terminalreporter.write_sep("-", "screenshots")
        for path in SAVED:
            terminalreporter.write_line(str(path))


def pytest_report_header(config):
    return f"python {sys.version.split()[0]}, shared corpora: {SHARED / 'corpora'}"
