"""How often the server's text is `chargen sample`'s, given the same options and rng_seed.

    nice -n 10 python benchmarks/serve_vs_sample.py              # 2x512 random weights, 100 seeds
    nice -n 10 python benchmarks/serve_vs_sample.py --checkpoint NAME --seeds 200

Runs the server's own code in this process (chargen.serve's Primer and Batcher, block rows as
`chargen serve` defaults, no HTTP) beside Generator.generate (what `chargen sample` prints), for
--seeds rng seeds, with and without a seed text, and prints how many texts are identical and,
for those that are not, where they part. They can part because the arithmetic differs in the
last bits: the server steps rows in blocks (products in two halves of each layer), `chargen
sample` steps one row with whole-layer products; and with a seed text `chargen sample` reads it
with its Keras model, the server with one-row numpy steps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="a run (default: a 2x512 model with random weights)")
    ap.add_argument("--root", default="checkpoints")
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--length", type=int, default=300)
    ap.add_argument("--temperature", type=float, default=0.8)
    args = ap.parse_args()
    import tempfile

    import numpy as np

    from chargen.config import SampleConfig, ServeConfig
    from chargen.cores import Stepper
    from chargen.generate import load
    from chargen.serve.batcher import Batcher
    from chargen.serve.jobs import Job
    from chargen.serve.priming import Primer
    from chargen.serve.requests import GenerateRequest
    from chargen.serve.sessions import Sessions
    from serve_load import write_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        run = args.checkpoint or write_checkpoint(Path(tmp), (512, 512), 64)
        gen = load(run, root=args.root)
    block = ServeConfig().block_rows
    print(f"{Path(str(gen.source)).parent.parent.name}: units {list(gen.config.units)}, block rows {block}, "
          f"{args.length} characters at temperature {args.temperature}, {args.seeds} rng seeds")
    for text in ("", "ROMEO:\n"):
        same, parted = 0, []
        for s in range(args.seeds):
            batcher = Batcher(Stepper(gen.stepper.engine), gen.tokenizer, block, block, Sessions(1),
                              notify=lambda jobs: None)
            primer = Primer(Stepper(gen.stepper.engine, cores=1), gen.tokenizer, batcher)
            job = Job(GenerateRequest(seed=text, sample=SampleConfig(args.length, args.temperature, rng_seed=s)))
            job.rng = np.random.default_rng(s)
            batcher.submit(primer.prime(job))
            while not job.done:
                batcher.run_step()
            served = "".join(job.pieces)
            gen.reset()
            sampled = gen.generate(text, args.length, temperature=args.temperature, rng_seed=s)
            if served == sampled:
                same += 1
            else:
                parted.append(next(i for i, (a, b) in enumerate(zip(served, sampled)) if a != b))
        where = f"; the others part at character {statistics.median(parted):.0f} (median)" if parted else ""
        print(f"seed text {text!r}: {same}/{args.seeds} identical{where}", flush=True)


if __name__ == "__main__":
    main()
