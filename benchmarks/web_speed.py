"""Generation speed of a web export in headless Chromium, against chargen's numpy engine in the same run.

    python benchmarks/web_speed.py                       # 2x448 and 2x512 (chargen's default)
    python benchmarks/web_speed.py --units 128,128 --length 2000

Writes a web export of random weights (speed does not depend on training; tinyshakespeare's
characters), serves it on 127.0.0.1, and in Debian's headless Chromium (as the tests drive it,
tests/browser.py) times the page's model loading and chargen.js's Generator over --length
characters at temperature 0.8, best of --repeat. The baseline is chargen's numpy engine stepping the same
weights on one thread with chargen.sampling.pick, timed in the same run, and the ratio is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the CLI sets it (chargen/cli.py)
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
SHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"

import numpy as np  # noqa: E402

from browser import INSTALL, chromium_paths, start_browser, static_server  # noqa: E402
from chargen.exporters import web as export_web  # noqa: E402
from chargen.config import ModelConfig, SampleConfig  # noqa: E402
from chargen.net.layout import weight_shapes  # noqa: E402
from chargen.net.numpy_engine import NumpyEngine  # noqa: E402
from chargen.sampling import pick  # noqa: E402
from chargen.tokenizer import CharTokenizer  # noqa: E402

IN_PAGE = """const [length, repeat] = arguments, done = arguments[arguments.length - 1];
window.chargenPage.ready.then(({generator}) => {
  const ready = performance.now(), rates = [];  // since the page began to load
  for (let k = 0; k < repeat; k++) {
    const t = performance.now();
    for (const piece of generator.stream("", {length, temperature: 0.8, rngSeed: k})) ;
    rates.push(length / ((performance.now() - t) / 1000));
  }
  done({rates, ready});
}).catch((e) => done({error: String(e)}));"""


def export_random(units: tuple[int, ...], tok: CharTokenizer, folder: Path) -> list[np.ndarray]:
    cfg = ModelConfig(vocab_size=tok.vocab_size, embed=64, units=units)
    rng = np.random.default_rng(0)
    weights = [(rng.standard_normal(s) * 0.1).astype(np.float32) for s in weight_shapes(cfg)]
    head = {"format": "chargen-export", "version": 1, "model_format": "web", "units": list(units), "embed": cfg.embed,
            "vocab_size": tok.vocab_size, "tokenizer": "char", "chars": tok.chars, "start_token": 0,
            "source": {"run": "random weights", "which": "-", "epoch": 0}}
    folder.mkdir(parents=True)
    export_web.write(folder, types.SimpleNamespace(model=cfg, weights=weights, tokenizer=tok), head, "chargen_export.json")
    return weights


def numpy_rate(weights: list[np.ndarray], units: tuple[int, ...], length: int, repeat: int) -> float:
    engine = NumpyEngine.from_weights(ModelConfig(vocab_size=len(weights[-1]), embed=64, units=units), weights)
    best = 0.0
    for k in range(repeat):
        rng, ids = np.random.default_rng(k), np.array([0])
        state = engine.zero_state(1)
        t = time.perf_counter()
        for _ in range(length):
            logits, state = engine.step(ids, state)
            ids = pick(logits, SampleConfig(), rng)
        best = max(best, length / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", action="append", help="LSTM units per layer, e.g. 448,448 (repeatable; "
                                                      "default: 448,448 and 512,512)")
    ap.add_argument("--length", type=int, default=500, help="characters per timed run")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per engine; the best is shown")
    args = ap.parse_args()
    if chromium_paths() is None:
        raise SystemExit(f"web_speed.py needs Debian's headless Chromium: {INSTALL}")
    text = SHAKESPEARE.read_text(encoding="utf-8") if SHAKESPEARE.exists() else "".join(map(chr, range(32, 97)))
    tok = CharTokenizer.from_text(text)
    work = Path(tempfile.mkdtemp(prefix="web_speed-"))
    driver = start_browser(work / "profile")
    print(f"{'model':>9}  {'weights.bin':>11}  {'page ready':>10}  {'browser chars/s':>15}  "
          f"{'numpy chars/s':>13}  {'ratio':>5}")
    try:
        for spec in args.units or ["448,448", "512,512"]:
            units = tuple(int(u) for u in spec.split(","))
            folder = work / spec.replace(",", "x")
            weights = export_random(units, tok, folder)
            with static_server(folder) as url:
                driver.get(url)
                got = driver.execute_async_script(IN_PAGE, args.length, args.repeat)
            if "error" in got:
                raise SystemExit(f"the page failed: {got['error']}")
            browser, base = max(got["rates"]), numpy_rate(weights, units, args.length, args.repeat)
            size = (folder / "weights.bin").stat().st_size / 1e6
            print(f"{'x'.join(map(str, units)):>9}  {size:>8.1f} MB  {got['ready'] / 1000:>8.2f} s  "
                  f"{browser:>15,.0f}  {base:>13,.0f}  {browser / base:>5.2f}")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
