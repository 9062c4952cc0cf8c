"""A real headless Chromium for tests, a static file server on 127.0.0.1, and screenshots kept as artifacts.

Chromium and its driver are Debian's (`apt-get install -y chromium chromium-driver`; .ci/run installs
them), driven by Selenium pointed at /usr/bin/chromedriver so that Selenium Manager downloads nothing.
A browser test takes the session-wide `browser` fixture (conftest.py), serves what it opens, and saves
a screenshot of each page it checks:

    def test_page(browser, folder):
        with static_server(folder) as url:
            browser.get(url)
            ...
            screenshot(browser, "my-page")    # test-artifacts/my-page.png, listed at the end of the run
        assert browser_errors(browser) == []

Where no Chromium is installed the fixture skips, saying how to install it; with
CHARGEN_REQUIRE_BROWSER=1 (CI, once it has installed one) it fails instead, so a skip cannot hide there.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]  # not from conftest: benchmarks/web_speed.py imports this module too
ARTIFACTS = ROOT / "test-artifacts"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1100,900")
INSTALL = "apt-get install -y chromium chromium-driver"
SAVED: list[Path] = []  # screenshots taken in this session, for the summary at the end


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) executables, or None where they are not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start_browser(user_data_dir: Path):
    """Headless Chromium with a fresh profile, its console kept (browser_errors reads it)."""
    from selenium import webdriver

    paths = chromium_paths()
    assert paths is not None, f"no Chromium: {INSTALL}"
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in FLAGS + (f"--user-data-dir={user_data_dir}",):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=paths[1]))
    driver.set_script_timeout(60)
    return driver


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # the test output is for failures, not for every GET
        pass


@contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """Serve `folder` over HTTP on 127.0.0.1 (a free port) from a thread; yields its URL, ending in "/"."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def screenshot(driver, name: str) -> Path:
    """Save the page as test-artifacts/NAME.png and print where (the run's summary lists them all too)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    SAVED.append(path)
    print(f"screenshot: {path}")
    return path


def browser_errors(driver) -> list[str]:
    """The console's errors since the last call (reading the log empties it)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def wait_for(driver, script: str, *args, timeout: float = 30):
    """Wait until the JavaScript expression `script` (arguments as `arguments[i]`) is truthy; return its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: d.execute_script(f"return {script};", *args), message=f"timed out waiting for: {script}")


def require_browser() -> tuple[str, str]:
    """The installed Chromium, else a skip (or, with CHARGEN_REQUIRE_BROWSER=1, a failure) saying how to install it."""
    import pytest

    paths = chromium_paths()
    if paths is None:
        reason = f"no headless Chromium here: {INSTALL} (.ci/run does this as root)"
        if os.environ.get("CHARGEN_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + "; CHARGEN_REQUIRE_BROWSER=1 forbids skipping")
        pytest.skip(reason)
    return paths
