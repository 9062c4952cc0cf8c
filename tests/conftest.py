import functools
import os
import signal
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

# A shell starts a background job (`python -m pytest &`, a CI step run that way) with SIGINT ignored, and an
# ignored signal stays ignored in every child process (chargen keeps it so, as nohup means it). The tests that
# press Ctrl-C on a real chargen process need it at its default: Python's own handler here, SIG_DFL after exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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
def trained_runs(tmp_path_factory, small_text):
    """run(cell) -> a tiny model of that cell ("lstm", "gru") trained for 2 epochs, once per session; for tests
    that only read it."""
    import chargen

    @functools.cache
    def run(cell: str):
        d = tmp_path_factory.mktemp(f"run-{cell}")
        book = d / "book.txt"
        book.write_text(small_text, encoding="utf-8")
        return chargen.train(book, root=d / "checkpoints", epochs=2, seed=3, progress=False, cell=cell, **TINY)
    return run


@pytest.fixture(scope="session")
def trained_run(trained_runs):
    """The tiny LSTM trained for 2 epochs (trained_runs("lstm"))."""
    return trained_runs("lstm")


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


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, small_text):
    """make(**options) -> the `last` snapshot of an uninterrupted run on small_text with TINY and `options`,
    trained once per session: what an interrupted and resumed run must equal."""
    import chargen
    from chargen import checkpoint as ckpt

    made = {}

    def make(**options):
        key = tuple(sorted(options.items()))
        if key not in made:
            d = tmp_path_factory.mktemp("reference")
            (d / "book.txt").write_text(small_text, encoding="utf-8")
            result = chargen.train(d / "book.txt", root=d / "ck", progress=False, **{**TINY, **options})
            made[key] = ckpt.snapshot_dir(result.run_dir, "last")
        return made[key]
    return make


@pytest.fixture()
def step_clock(monkeypatch):
    """The loop's clock made to read one second per training step (runs.StepClock; pass it as a callback too):
    time budgets and --save-every then count steps, whatever the machine's speed."""
    from chargen import loop
    from runs import StepClock

    clock = StepClock()
    monkeypatch.setattr(loop, "clock", clock)
    return clock


def pytest_report_header(config):
    return f"python {sys.version.split()[0]}, shared corpora: {SHARED / 'corpora'}"
