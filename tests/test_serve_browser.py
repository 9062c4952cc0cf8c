"""The `chargen serve` playground in a real headless Chromium against a real server process on 127.0.0.1."""

import time

import pytest

from browser import browser_errors, screenshot, wait_for
from serving import Server

LONG = 1_000_000  # characters: a stream that lasts until it is stopped


@pytest.fixture(scope="module")
def server(trained_run):
    s = Server("--checkpoint", trained_run.run_dir, "--which", "last", "--max-length", LONG, "--block-rows", 4)
    yield s
    assert s.stop() == 0, s.stderr


def _fill(browser, **boxes):
    for name, value in boxes.items():
        box = browser.find_element("id", name.replace("_", "-"))
        box.clear()
        box.send_keys(str(value))


def _output(browser) -> str:
    return browser.find_element("id", "output").text


def test_the_playground_streams_text_as_it_is_generated_and_stops(browser, server):
    browser.get(server.url)
    wait_for(browser, "document.getElementById('model-info').textContent.includes('tokens')")
    _fill(browser, seed="the ", length=LONG, temperature=1.0, rng_seed=3)
    browser.find_element("id", "generate").click()
    # Text appears while the request is still running: it is streamed, not delivered at the end.
    lengths = []
    deadline = time.monotonic() + 60
    while len(set(lengths)) < 3:
        assert time.monotonic() < deadline, lengths
        status = browser.find_element("id", "status").text
        assert status == "generating…", status
        lengths.append(len(_output(browser)))
        time.sleep(0.05)
    assert lengths[-1] > len("the ")
    screenshot(browser, "serve-playground-streaming")
    browser.find_element("id", "cancel").click()
    wait_for(browser, "document.getElementById('status').textContent === 'stopped'")
    server.wait_for(lambda stats: stats["active_rows"] == 0)  # the page's disconnect freed its row
    assert browser_errors(browser) == []


def test_the_playground_shows_what_the_api_answers(browser, server):
    browser.get(server.url)
    wait_for(browser, "document.getElementById('model-info').textContent.includes('tokens')")
    _fill(browser, seed="the ", length=300, temperature=1.0, rng_seed=3)
    browser.find_element("id", "generate").click()
    wait_for(browser, "document.getElementById('status').textContent.startsWith('300 characters')")
    answer = server.client.post("/v1/generate", json=dict(seed="the ", length=300, temperature=1.0, rng_seed=3)).json()
    assert _output(browser) == ("the " + answer["text"]).strip()  # the page shows the seed, then the continuation
    screenshot(browser, "serve-playground-done")
    assert browser_errors(browser) == []
