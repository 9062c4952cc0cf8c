"""The web export in a real headless Chromium: its probabilities against chargen's numpy engine, the page's
controls, the page opened as a file, a BPE vocabulary, and the engine's sampling against chargen's."""

import functools

import numpy as np
import pytest

import chargen
from browser import browser_errors, screenshot, static_server, wait_for
from cells import CELLS
from chargen.config import SampleConfig
from chargen.net.numpy_engine import NumpyEngine
from chargen.sampling import pick
from conftest import TINY

STEPS = 200


@pytest.fixture(scope="module")
def sites(trained_runs, tmp_path_factory):
    """site(cell) -> the web export of that cell's tiny trained run (its best snapshot), made once."""
    @functools.cache
    def site(cell):
        return chargen.export(trained_runs(cell).run_dir, out=tmp_path_factory.mktemp("web") / "site", format="web")
    return site


@pytest.fixture(scope="module")
def site(sites):
    return sites("lstm")


@pytest.fixture(scope="module")
def generator(trained_run):
    return chargen.load(trained_run.run_dir)  # the snapshot the export took (best)


def in_page(browser, body: str, *args):
    """Run the JavaScript `body` (it sees model, generator and args) once the page has loaded its model."""
    script = """const done = arguments[arguments.length - 1], args = Array.prototype.slice.call(arguments, 0, -1);
        window.chargenPage.ready.then(({model, generator}) => {
          try { done({value: (function (model, generator, args) {""" + body + """})(model, generator, args)}); }
          catch (e) { done({error: String(e.stack || e)}); }
        });"""
    result = browser.execute_async_script(script, *args)
    assert "error" not in result, result["error"]
    return result["value"]


def numpy_probs(gen, ids) -> np.ndarray:
    """Per step, the next token's probabilities from chargen's numpy engine, fed `ids` from the zero state."""
    engine, state, out = NumpyEngine.from_weights(gen.config, gen.model.get_weights()), gen.zero_state(), []
    for i in ids:
        logits, state = engine.step(np.array([i]), state)
        z = logits[0].astype(np.float64)
        out.append(np.exp(z - z.max()) / np.exp(z - z.max()).sum())
    return np.array(out)


def fill(browser, **boxes):
    for name, value in boxes.items():
        box = browser.find_element("id", name.replace("_", "-"))
        box.clear()
        box.send_keys(str(value))


def press(browser, button: str) -> None:
    browser.execute_script("document.getElementById('status').textContent = ''")
    browser.find_element("id", button).click()
    wait_for(browser, "/^(Generated|Stopped)/.test(document.getElementById('status').textContent)"
                      " || document.getElementById('error').textContent")


def shown(browser, element: str) -> str:
    return browser.execute_script(f"return document.getElementById('{element}').textContent")


@pytest.mark.parametrize("cell", CELLS)
def test_probabilities_match_the_numpy_engine_over_200_steps(browser, sites, trained_runs, small_text, cell):
    """The page's engine (chargen.js: CELLS[cell]) against chargen's numpy engine, for every cell."""
    generator = chargen.load(trained_runs(cell).run_dir)  # the snapshot the export took (best)
    text = small_text[:STEPS]  # words with király, 中文 and ünï in them: characters beyond ASCII and the BMP's Latin
    ids = generator.tokenizer.encode(text).tolist()
    with static_server(sites(cell)) as url:
        browser.get(url)
        got = in_page(browser, "return {ids: generator.tokenizer.encode(args[0]), probs: model.trace(args[1])};", text, ids)
    assert got["ids"] == ids
    probs, want = np.array(got["probs"]), numpy_probs(generator, ids)
    assert probs.shape == want.shape == (STEPS, generator.config.vocab_size)
    diff = np.abs(probs - want).max()
    print(f"max |browser - numpy| over {STEPS} steps: {diff:.2e}")
    assert diff < 1e-5
    assert browser_errors(browser) == []


def test_the_page_generates_as_chargen_does(browser, site, generator):
    vocab = set(generator.tokenizer.chars)
    with static_server(site) as url:
        browser.get(url)
        in_page(browser, "return true;")
        assert browser.find_element("id", "generate").is_enabled()
        seed = "the state of"
        fill(browser, seed=seed, length=150, temperature=0)
        press(browser, "generate")
        assert shown(browser, "output-seed") == seed
        # greedy: the text `chargen sample --temperature 0` gives
        assert shown(browser, "output-text") == generator.generate(seed, 150, temperature=0)

        fill(browser, length=300, temperature=0.8, top_k=5, top_p=0.9, rng_seed=5)
        press(browser, "generate")
        first = shown(browser, "output-text")
        assert len(first) == 300 and set(first) <= vocab
        press(browser, "generate")
        assert shown(browser, "output-text") == first  # the same random seed, the same text
        # and from the zero state: the page's state is its seed and text fed to a new Generator
        assert in_page(browser, """const fresh = new chargen.Generator(model), flat = (g) => JSON.stringify(
                                     g.state.map((s) => Object.values(s).map((v) => Array.from(v))));
                                   fresh.prime(args[0] + args[1]);
                                   return flat(fresh) === flat(generator);""", seed, first)
        press(browser, "continue")  # on from where it stopped: the state and the random sequence carry over
        more = shown(browser, "output-text")
        assert more.startswith(first) and len(more) == 600 and shown(browser, "output-seed") == seed
        screenshot(browser, "web-export-served")
        fill(browser, length=600)
        press(browser, "generate")
        assert shown(browser, "output-text") == more
        fill(browser, length=300)
        fill(browser, rng_seed=6)
        press(browser, "generate")
        assert shown(browser, "output-text") != first

        fill(browser, temperature=-1)
        press(browser, "generate")
        assert shown(browser, "error") == "temperature must be >= 0, got -1"
        fill(browser, temperature=0.5, seed="§ state")
        press(browser, "generate")
        assert shown(browser, "error").startswith('the seed has characters the model never saw: "§"')
        browser.find_element("id", "skip-unknown").click()
        press(browser, "generate")
        assert shown(browser, "error") == "" and shown(browser, "output-seed") == "§ state"
        assert len(shown(browser, "output-text")) == 300
    assert browser_errors(browser) == []


def test_opened_as_a_file_it_asks_for_the_model_files(browser, site, generator):
    browser.get((site / "index.html").as_uri())
    wait_for(browser, "!document.getElementById('pick-files').hidden")
    assert not browser.find_element("id", "generate").is_enabled()
    screenshot(browser, "web-export-file-asks")
    browser.find_element("id", "files").send_keys(f"{site / 'chargen_export.json'}\n{site / 'weights.bin'}")
    in_page(browser, "return true;")
    fill(browser, seed="each row", length=120, temperature=0)
    press(browser, "generate")
    assert shown(browser, "output-text") == generator.generate("each row", 120, temperature=0)
    fill(browser, temperature=1, rng_seed=1)
    press(browser, "generate")
    assert len(shown(browser, "output-text")) == 120
    screenshot(browser, "web-export-file")
    assert browser_errors(browser) == []


def test_a_bpe_export_tokenizes_and_steps_as_chargen_does(browser, tmp_path, small_text):
    book = tmp_path / "book.txt"
    # runs of one letter make merges of a token with itself: in "aaa" only the leftmost "aa" may merge first
    small_text += "aaa baaa aaaaa zzz\n" * 30
    book.write_text(small_text, encoding="utf-8")
    run = chargen.train(book, root=tmp_path / "ck", epochs=1, seed=2, progress=False, tokenizer="bpe", bpe_vocab=60,
                        **TINY)
    site = chargen.export(run.run_dir, out=tmp_path / "site", format="web")
    gen = chargen.load(run.run_dir)
    ids = gen.tokenizer.encode(small_text).tolist()
    assert len(ids) > STEPS and any(len(gen.tokenizer.tokens[i]) > 1 for i in ids)
    seed = "the book"
    with static_server(site) as url:
        browser.get(url)
        got = in_page(browser, """return {ids: generator.tokenizer.encode(args[0]), probs: model.trace(args[1]),
                          text: Array.from(generator.stream(args[2], {length: 100, temperature: 0})).join("")};""",
                      small_text, ids[:STEPS], seed)
    assert got["ids"] == ids  # the whole text: Hugging Face's BPE, word by word, in JavaScript
    assert np.abs(np.array(got["probs"]) - numpy_probs(gen, ids[:STEPS])).max() < 1e-5
    assert got["text"] == gen.generate(seed, 100, temperature=0)  # whole tokens up to 100 characters, as chargen does
    assert browser_errors(browser) == []


def test_sampling_draws_from_the_distribution_pick_draws_from(browser, site):
    logits = np.log([0.02, 0.3, 0.05, 0.2, 0.25, 0.03, 0.15]) + 1.5
    settings = [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 3, 1.0), (1.0, 0, 0.6), (1.3, 4, 0.8), (1.0, 0, 0.01)]
    draws = 20000
    with static_server(site) as url:
        browser.get(url)
        got = in_page(browser, """const [logits, settings, draws] = args;
            const a = chargen.rng(3), b = chargen.rng(3), c = chargen.rng(4);
            const same = [a(), a(), a()].join() === [b(), b(), b()].join(), differs = a() !== c();
            return {same, differs, runs: settings.map(([temperature, topK, topP]) => {
              const o = {temperature, topK, topP}, random = chargen.rng(7), counts = new Array(logits.length).fill(0);
              for (let i = 0; i < draws; i++) counts[chargen.pick(logits, o, random)]++;
              return {p: Array.from(chargen.distribution(logits, o)), counts};
            })};""", logits.tolist(), settings, draws)
    assert got["same"] and got["differs"]
    rng = np.random.default_rng(0)
    for (temperature, top_k, top_p), run in zip(settings, got["runs"]):
        p = np.array(run["p"])
        # the definition: softmax(logits / T), the k most likely, the smallest set reaching top_p
        want = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
        order = np.argsort(-want)
        keep = order[:top_k or len(want)]
        cum = np.cumsum(want[keep] / want[keep].sum())
        keep = keep[:int(np.searchsorted(cum, top_p - 1e-12)) + 1]
        want = np.where(np.isin(np.arange(len(want)), keep), want, 0.0)
        np.testing.assert_allclose(p, want / want.sum(), atol=1e-12, err_msg=f"{(temperature, top_k, top_p)}")
        # chargen.sampling.pick's own draws, and the browser's, land where p says (5 standard errors)
        options = SampleConfig(0, temperature, top_k, top_p)
        ours = np.bincount(pick(np.tile(logits, (draws, 1)), options, rng), minlength=len(p)) / draws
        theirs = np.array(run["counts"]) / draws
        tolerance = 5 * np.sqrt(p * (1 - p) / draws) + 1e-12
        assert (np.abs(ours - p) <= tolerance).all() and (np.abs(theirs - p) <= tolerance).all(), (ours, theirs, p)
    assert browser_errors(browser) == []
