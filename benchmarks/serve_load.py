"""Load on `chargen serve` over real HTTP on localhost: many streaming clients at once, and the same without batching.

    nice -n 10 python benchmarks/serve_load.py                   # 2x512, 1/8/32/64 clients, 15 s each, fp32 and int8
    nice -n 10 python benchmarks/serve_load.py --clients 32 --seconds 30 --block-rows 32 --precision int8

Writes a 2x512 checkpoint with random weights to a temporary folder (speed does not depend on
training), starts `chargen serve` on it as a separate process, and runs N asyncio clients (httpx)
in this process, each sending streaming requests of --length characters back to back for
--seconds (the clients arrive spread over the first --ramp second). Prints per level: total
chars/s, chars/s per client, time to first character p50/p99 (from sending the request to the
first text event), errors, and from the server's own counters the steps per second and rows per
step; all of it once per --precision (the server's engine: fp32 numpy, int8 LiteRT). Then 32 clients
served one request at a time by an fp32 server
stepping one row per product (--block-rows 1: the one-row path of `chargen sample`), no
batching, and the ratio. The clients share the server's 2 cores, so their cost is in the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHAKESPEARE = ROOT / "corpora" / "tinyshakespeare.txt"
SEEDS = ["ROMEO:", "JULIET:\nO ", "First Citizen:\n", "", "KING HENRY:\nNow ", "The "]


def write_checkpoint(folder: Path, units: tuple[int, ...], embed: int) -> Path:
    """A run folder holding one snapshot of a model with random weights (as `last` and `best`)."""
    from chargen._quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    from chargen import checkpoint as ckpt
    from chargen.config import ModelConfig, TrainConfig
    from chargen.net.model import build_model
    from chargen.tokenizer import CharTokenizer

    text = SHAKESPEARE.read_text(encoding="utf-8") if SHAKESPEARE.exists() else "".join(map(chr, range(32, 127))) + "\n"
    tok = CharTokenizer.from_text(text)
    cfg = ModelConfig(vocab_size=tok.vocab_size, embed=embed, units=units)
    run = folder / f"random-{'x'.join(map(str, units))}"
    files = {"config.json": ckpt.config_json(cfg, TrainConfig()), "tokenizer.json": tok.to_str(),
             "progress.json": json.dumps({"epoch": 0, "step": 0})}
    model = build_model(cfg, 1)
    weights = dict(zip(ckpt.weight_names(model.weights), model.get_weights()))
    ckpt.write_snapshot(run, "e0000-s000000", files, {"model.safetensors": weights}, point=("last", "best"))
    return run


class Server:
    def __init__(self, run: Path, *flags: str):
        cmd = [sys.executable, "-m", "chargen", "serve", "--checkpoint", str(run), "--port", "0", *flags]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        for line in self.proc.stderr:
            found = re.search(r"on (http://\S+/)", line)
            if found:
                self.url = found.group(1)
                return
        raise SystemExit(f"the server did not start: {self.proc.wait()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


async def client(http, url: str, length: int, until: float, turn: asyncio.Semaphore | None, out: dict, k: int,
                 delay: float, seed: str | None = None):
    await asyncio.sleep(delay)  # clients arrive spread over the ramp, not all in the same millisecond
    while time.perf_counter() < until:
        body = {"seed": SEEDS[k % len(SEEDS)] if seed is None else seed, "length": length, "temperature": 0.8,
                "stream": True}
        k += 1
        sent, first, chars = time.perf_counter(), None, 0  # waiting for a turn counts in the time to first character
        try:
            async with turn or _nothing():
                if time.perf_counter() >= until:  # a turn that came after the end: not served
                    break
                async with http.stream("POST", url + "v1/generate", json=body) as r:
                    if r.status_code != 200:
                        out["errors"] += 1
                        await r.aread()
                        continue
                    async for line in r.aiter_lines():
                        if line.startswith('data: {"text"'):
                            if first is None:
                                first = time.perf_counter()
                                out["ttfc"].append(first - sent)
                            chars += len(json.loads(line[6:])["text"])
                        elif line.startswith('data: {"done"'):
                            done = json.loads(line[6:])
                            if done["finish_reason"] != "length" or done["characters"] != chars:
                                out["errors"] += 1
                out["chars"] += chars
                out["busy"] += time.perf_counter() - sent
        except Exception as e:  # counted, and the first few shown
            out["errors"] += 1
            if out["errors"] <= 3:
                print(f"  error: {type(e).__name__}: {e}", file=sys.stderr)


class _nothing:
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False


async def load(url: str, clients: int, seconds: float, length: int, ramp: float, one_at_a_time: bool = False,
               long_seed: str | None = None) -> dict:
    """`clients` streaming clients for `seconds`; with `long_seed`, one more client sends that seed (10 characters
    a request) back to back, and its time to first character is reported apart (the others' figures are theirs)."""
    import httpx

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0), limits=limits) as http:
        warm = await http.post(url + "v1/generate", json={"seed": "ROMEO:", "length": 20})  # first-step set-up, not timed
        warm.raise_for_status()
        before = (await http.get(url + "v1/model")).json()["stats"]
        turn = asyncio.Semaphore(1) if one_at_a_time else None
        results = [{"chars": 0, "busy": 0.0, "ttfc": [], "errors": 0} for _ in range(clients)]
        primed = {"chars": 0, "busy": 0.0, "ttfc": [], "errors": 0}
        start = time.perf_counter()
        extra = [client(http, url, 10, start + seconds, None, primed, 0, 0.0, long_seed)] if long_seed else []
        await asyncio.gather(*(client(http, url, length, start + seconds, turn, out, k, ramp * k / clients)
                               for k, out in enumerate(results)), *extra)
        wall = time.perf_counter() - start
        after = (await http.get(url + "v1/model")).json()["stats"]
    ttfc = sorted(t for r in results for t in r["ttfc"])
    steps = after["steps"] - before["steps"]
    return {"clients": clients, "chars_per_s": sum(r["chars"] for r in results) / wall,
            "per_client": statistics.mean(r["chars"] / wall for r in results),
            "ttfc_p50_ms": 1000 * _quantile(ttfc, 0.5), "ttfc_p99_ms": 1000 * _quantile(ttfc, 0.99),
            "requests": len(ttfc), "errors": sum(r["errors"] for r in results), "seconds": wall,
            "steps_per_s": steps / wall, "rows_per_step": (after["characters"] - before["characters"]) / max(steps, 1),
            "long_seed_ttfc_ms": 1000 * statistics.median(primed["ttfc"]) if primed["ttfc"] else None,
            "long_seed_errors": primed["errors"]}


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def show(r: dict, label: str = "") -> None:
    print(f"{label or str(r['clients']) + ' clients':>22}  {r['chars_per_s']:>9,.0f}  {r['per_client']:>10,.0f}  "
          f"{r['ttfc_p50_ms']:>8.1f}  {r['ttfc_p99_ms']:>8.1f}  {r['requests']:>8}  {r['errors']:>6}  "
          f"{r['steps_per_s']:>7,.0f}  {r['rows_per_step']:>5.1f}", flush=True)


def engine_alone(run: Path, rows: int, block_rows: int, precision: str, seconds: float = 3.0) -> float:
    """Characters per second of the server's engine stepping `rows` rows in this process, no HTTP: what the
    figures above would be if serving cost nothing (measured in the same run, so the ratio holds on a busy host)."""
    import numpy as np

    from chargen.generate import load as load_generator
    from chargen.serve.service import engines

    gen = load_generator(run, precision=precision)
    engine = engines(gen)[0]
    blocks = -(-rows // block_rows)
    state = gen.zero_state(block_rows)
    ids = np.zeros(block_rows, np.int64)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(blocks):
            engine.step(ids, state)
        steps += 1
    return rows * steps / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", default="512,512")
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--clients", default="1,8,32,64", help="concurrent clients per level, comma-separated")
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each level")
    ap.add_argument("--length", type=int, default=500, help="characters per request")
    ap.add_argument("--block-rows", type=int, default=32)
    ap.add_argument("--flush-ms", type=int, default=None, help="the server's --flush-ms (default: its default)")
    ap.add_argument("--ramp", type=float, default=1.0, help="seconds over which the clients of a level arrive")
    ap.add_argument("--baseline-clients", type=int, default=32, help="clients served one at a time, no batching")
    ap.add_argument("--precision", default="fp32,int8", help="the server's engines to load in turn, comma-separated")
    ap.add_argument("--long-seed", type=int, default=8000,
                    help="then the baseline clients again, beside one client sending seeds this long (0: skip)")
    args = ap.parse_args()
    units = tuple(int(u) for u in args.units.split(","))
    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        run = write_checkpoint(Path(tmp), units, args.embed)
        print(f"chargen serve at {'x'.join(map(str, units))} (random weights), {os.cpu_count()} CPUs, block rows "
              f"{args.block_rows}, flush {args.flush_ms or 'default'} ms, {args.length} characters a request, "
              f"{args.seconds:.0f} s a level, {time.strftime('%Y-%m-%d %H:%M')}")
        print(f"{'':>22}  {'chars/s':>9}  {'per client':>10}  {'TTFC p50':>8}  {'p99 (ms)':>8}  {'requests':>8}  "
              f"{'errors':>6}  {'steps/s':>7}  {'rows':>5}")
        flush = [] if args.flush_ms is None else ["--flush-ms", str(args.flush_ms)]
        os.environ["CHARGEN_CACHE"] = str(Path(tmp) / "cache")  # the int8 conversion, for the servers and this process
        batched: dict[str, dict] = {}
        for precision in args.precision.split(","):
            print(f"--precision {precision}")
            batched[precision] = levels_at(run, args, levels, precision, flush)
        server = Server(run, "--block-rows", "1", "--max-concurrent", str(args.baseline_clients),
                        "--max-length", str(args.length), *flush)
        try:
            base = asyncio.run(load(server.url, args.baseline_clients, args.seconds, args.length, args.ramp,
                                    one_at_a_time=True))
            show(base, f"{args.baseline_clients} one at a time")
        finally:
            server.stop()
        n = args.baseline_clients
        for precision, results in batched.items():
            alone = engine_alone(run, n, args.block_rows, precision)
            print(f"{precision}: the engine alone (no HTTP, no clients, this process), {n} rows: {alone:,.0f} chars/s")
            if n in results:
                print(f"{precision}: batching, {n} clients: {results[n]['chars_per_s'] / base['chars_per_s']:.1f}x the "
                      f"total chars/s of serving them one at a time in fp32 (p99 time to first character "
                      f"{results[n]['ttfc_p99_ms']:.0f} ms vs {base['ttfc_p99_ms']:.0f} ms)")


def levels_at(run: Path, args: argparse.Namespace, levels: list[int], precision: str, flush: list[str]) -> dict:
    """Every level of clients against one server at `precision`, then the long-seed level; the results by clients."""
    batched = {}
    server = Server(run, "--block-rows", str(args.block_rows), "--max-concurrent", str(max(levels) + 1),
                    "--max-length", str(args.length), "--precision", precision, *flush)
    try:
        for n in levels:
            batched[n] = asyncio.run(load(server.url, n, args.seconds, args.length, args.ramp))
            show(batched[n])
        if args.long_seed:
            n = args.baseline_clients
            seed = (SHAKESPEARE.read_text(encoding="utf-8") if SHAKESPEARE.exists() else "ROMEO: " * 2000)[:args.long_seed]
            r = asyncio.run(load(server.url, n, args.seconds, args.length, args.ramp, long_seed=seed))
            show(r, f"{n} + {args.long_seed:,}-char seeds")
            print(f"{'':>22}  (the long-seed requests: time to first character {r['long_seed_ttfc_ms'] or 0:,.0f} ms "
                  f"median, {r['long_seed_errors']} errors)")
    finally:
        server.stop()
    return batched

if __name__ == "__main__":
    main()
