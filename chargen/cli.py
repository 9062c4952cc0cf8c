"""The command line. The only place that turns a ChargenError into a message and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import MISSING
from typing import Any, Sequence

from chargen._quiet import import_tensorflow_quietly
from chargen.config import ModelConfig, SampleConfig, TrainConfig, cli_fields, parse_units
from chargen.errors import ChargenError

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


def _add_fields(parser: argparse.ArgumentParser, cls: type, rename: dict[str, str] | None = None) -> None:
    """One flag per dataclass field, help and default taken from the field itself."""
    for f in cli_fields(cls):
        flag = "--" + (rename or {}).get(f.name, f.name).replace("_", "-")
        default = f.default if f.default is not MISSING else None
        kind = str if f.name == "units" else (int if f.type in ("int", "int | None") else float)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        parser.add_argument(flag, dest=f.name, type=kind, default=None, metavar=f.name.upper(),
                            help=f"{f.metadata['help']} (default: {shown})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chargen", description="Character-level text generation with stateful LSTMs.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="learn a whole book (a UTF-8 file, a folder of .txt files, or - for stdin)")
    t.add_argument("book", help="the text to learn")
    _add_fields(t, ModelConfig)
    t.add_argument("--layers", type=int, default=None, help="number of LSTM layers, with one --units number")
    _add_fields(t, TrainConfig)
    t.add_argument("--name", help="checkpoint folder name under --root (default: the book's file name)")
    t.add_argument("--root", default="checkpoints", help="where checkpoints go (default: checkpoints)")
    t.add_argument("--resume", action="store_true", help="continue the run in --root/--name from its last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    t.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")

    s = sub.add_parser("sample", help="stream a continuation of --seed from a checkpoint")
    s.add_argument("--seed", default="", help="text to continue (default: start from zero state)")
    s.add_argument("--checkpoint", default=None, help="run name under --root or a folder (default: the newest run)")
    s.add_argument("--which", choices=("best", "last"), default="best", help="snapshot to load (default: best)")
    s.add_argument("--root", default="checkpoints", help="where checkpoints are (default: checkpoints)")
    s.add_argument("--unknown", choices=("error", "skip"), default="error",
                   help="seed characters not in the vocabulary: stop with an error or skip them")
    s.add_argument("--num-samples", type=int, default=1, metavar="N",
                   help="generate N independent samples at once (default: 1); live on a terminal, "
                        "one after another otherwise")
    s.add_argument("--echo-seed", dest="echo", action="store_true", help="print the seed before its continuation")
    _add_fields(s, SampleConfig)
    return p


def _given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in cli_fields(cls) if getattr(args, f.name, None) is not None}


def cmd_train(args: argparse.Namespace) -> int:
    import_tensorflow_quietly()
    from chargen.trainer import TrainingInterrupted, train

    options = {**_given(args, ModelConfig), **_given(args, TrainConfig)}
    if args.units is not None or args.layers is not None:
        default_units = ModelConfig().units
        options["units"] = parse_units(args.units or str(default_units[0]), args.layers)
    progress = False if args.quiet else None
    try:
        result = train(args.book, name=args.name, root=args.root, resume=args.resume, overwrite=args.overwrite,
                       progress=progress, **options)
    except TrainingInterrupted as e:
        print(f"chargen: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.quiet:
        print(f"checkpoint: {result.run_dir}  (sample with: chargen sample --checkpoint {result.run_dir.name} "
              f"--seed \"...\")", file=sys.stderr)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from chargen.generate import load

    cfg = SampleConfig(**_given(args, SampleConfig)).validate()  # bad options fail before loading
    import_tensorflow_quietly()
    gen = load(args.checkpoint, which=args.which, root=args.root)
    prefix = args.seed if args.echo else ""
    if args.num_samples != 1:
        return _sample_many(gen, args, cfg, prefix)
    out = sys.stdout
    out.write(prefix)
    for piece in gen.stream(args.seed, cfg.length, cfg.temperature, cfg.top_k, cfg.top_p, cfg.rng_seed, args.unknown):
        out.write(piece)
        out.flush()  # text appears as it is generated
    out.write("\n")
    out.flush()
    return 0


def _sample_many(gen, args: argparse.Namespace, cfg: SampleConfig, prefix: str) -> int:
    """N samples generated together: shown growing live on a terminal, printed in turn otherwise."""
    steps = gen.stream_many(args.seed, args.num_samples, cfg.length, cfg.temperature, cfg.top_k, cfg.top_p,
                            cfg.rng_seed, args.unknown)
    texts = [[prefix] for _ in range(args.num_samples)]
    if sys.stdout.isatty():
        from rich.console import Console, Group
        from rich.live import Live
        from rich.text import Text

        def view():
            return Group(*(Text(f"--- sample {i + 1} ---\n" + "".join(t)) for i, t in enumerate(texts)))

        with Live(view(), console=Console(), refresh_per_second=12, transient=False) as live:
            for pieces in steps:
                for t, p in zip(texts, pieces):
                    t.append(p)
                live.update(view())
        return 0
    for pieces in steps:
        for t, p in zip(texts, pieces):
            t.append(p)
    for i, t in enumerate(texts):
        sys.stdout.write(f"--- sample {i + 1} ---\n" + "".join(t) + "\n")
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    # Must be set before numpy/TensorFlow load: quiet TF's start-up chatter, and keep numpy's
    # BLAS on one thread (batch-1 steps are too small to split, and extra threads collapse
    # when another process is busy).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    handler = {"train": cmd_train, "sample": cmd_sample}[args.command]
    try:
        return handler(args)
    except ChargenError as e:
        print(f"chargen: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("chargen: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `chargen sample | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
