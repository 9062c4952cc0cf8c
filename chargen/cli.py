"""The command line. The only place that turns a ChargenError into a message and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import MISSING
from typing import Any, Sequence

from chargen._quiet import import_tensorflow_quietly, native_stderr_hidden
from chargen.config import ModelConfig, SampleConfig, TrainConfig, cli_fields, parse_units
from chargen.config import flag as field_flag
from chargen.errors import ChargenError
from chargen.signals import TermAndHupStop, exit_code, signal_name

EXIT_USAGE = 2


def _add_fields(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per dataclass field (config.flag names it), help and default taken from the field itself."""
    for f in cli_fields(cls):
        flag = field_flag(f.name)
        default = f.default if f.default is not MISSING else None
        kind = str if f.name == "units" or f.type == "str" else (int if f.type in ("int", "int | None") else float)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        said = "(default:" in f.metadata["help"]  # a help text that explains its own default
        parser.add_argument(flag, dest=f.name, type=kind, default=None, metavar=flag[2:].replace("-", "_").upper(),
                            help=f.metadata["help"] + ("" if said else f" (default: {shown})"))


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
    t.add_argument("--quiet", action="store_true", help="print nothing while training (no bar, no lines)")
    t.add_argument("--log-every", type=float, default=60.0, metavar="SECONDS",
                   help="when stderr is not a terminal (a log file, a pipe): a progress line every SECONDS "
                        "(default: 60; 0 = after every step)")
    t.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="text lines, or one JSON object per line with an \"event\" field, for machines (default: text)")
    t.add_argument("--sample-every", type=int, default=None, metavar="N",
                   help="every N epochs, print a sample from a batch-1 copy of the model on stderr (training is "
                        "not disturbed; printed even with --quiet, since you asked for it)")
    t.add_argument("--sample-length", type=int, default=None, metavar="N",
                   help="characters per sample for --sample-every and --tensorboard (default: 200)")
    t.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="write loss, bpc, chars/s, lr and a text sample per epoch to DIR/NAME for TensorBoard")

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

    x = sub.add_parser("export", help="write a checkpoint as a single-step SavedModel or TFLite model for other runtimes")
    x.add_argument("checkpoint", nargs="?", default=None, metavar="NAME",
                   help="run name under --root or a folder (default: the newest run)")
    x.add_argument("--format", choices=("savedmodel", "tflite"), default="savedmodel",
                   help="savedmodel (a folder for any TensorFlow runtime) or tflite (default: savedmodel)")
    x.add_argument("--out", default=None, metavar="DIR", help="folder to write (default: exports/NAME-FORMAT)")
    x.add_argument("--which", choices=("best", "last"), default="best", help="snapshot to export (default: best)")
    x.add_argument("--root", default="checkpoints", help="where checkpoints are (default: checkpoints)")
    x.add_argument("--overwrite", action="store_true", help="replace an existing export in --out")

    e = sub.add_parser("eval", help="bits per character of a checkpoint on a text, next to gzip, bz2 and lzma")
    e.add_argument("book", help="the text to score: a UTF-8 file, a folder of .txt files, or - for stdin")
    e.add_argument("--checkpoint", default=None, help="run name under --root or a folder (default: the newest run)")
    e.add_argument("--which", choices=("best", "last"), default="best", help="snapshot to score (default: best)")
    e.add_argument("--root", default="checkpoints", help="where checkpoints are (default: checkpoints)")
    e.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="contiguous streams the text is split into; fewer for a short text (default: 32)")
    e.add_argument("--seq-len", type=int, default=None, metavar="T", help="characters per stream per step (default: 256)")
    e.add_argument("--unknown", choices=("error", "skip"), default="error",
                   help="characters not in the vocabulary: stop with an error or drop them")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")

    h = sub.add_parser("history", help="a run's per-epoch losses as a table and a terminal chart")
    h.add_argument("checkpoint", nargs="?", default=None, metavar="NAME",
                   help="run name under --root or a folder (default: the newest run)")
    h.add_argument("--root", default="checkpoints", help="where checkpoints are (default: checkpoints)")
    h.add_argument("--json", action="store_true", help="print the epochs as a JSON list instead")
    return p


def _given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in cli_fields(cls) if getattr(args, f.name, None) is not None}


def _train_callbacks(args: argparse.Namespace) -> list:
    """The epoch-end callbacks the flags ask for, built (and so checked) before TensorFlow loads."""
    from chargen.callbacks import SAMPLE_LENGTH, SampleEvery, TensorBoard
    from chargen.errors import ConfigError
    from chargen.trainlog import check_log_options, json_line, stderr_line

    check_log_options(args.log_every, args.log_format)

    length = SAMPLE_LENGTH if args.sample_length is None else args.sample_length
    if args.sample_length is not None and args.sample_every is None and args.tensorboard is None:
        raise ConfigError(f"--sample-length {args.sample_length} needs --sample-every N or --tensorboard DIR")
    callbacks = []
    if args.sample_every is not None:
        write = None
        if args.log_format == "json":  # a sample is one more event, so the log stays one JSON object a line
            def write(epoch: int, text: str) -> None:
                stderr_line(json_line("sample", epoch=epoch, text=text))
        callbacks.append(SampleEvery(args.sample_every, length, write=write))
    if args.tensorboard is not None:
        callbacks.append(TensorBoard(args.tensorboard, sample_length=length))
    return callbacks


def cmd_train(args: argparse.Namespace) -> int:
    if args.log_format != "json":
        return _train(args)
    from chargen.trainlog import json_line, stderr_line

    try:  # with --log-format json an error is one more event, so the log stays one JSON object a line
        return _train(args)
    except ChargenError as e:
        stderr_line(json_line("error", message=f"chargen: error: {e}", exit_code=EXIT_USAGE))
        return EXIT_USAGE


def _train(args: argparse.Namespace) -> int:
    callbacks = _train_callbacks(args)  # bad flags fail at once, before TensorFlow or the book
    import_tensorflow_quietly()
    from chargen.trainer import TrainingInterrupted, train

    options = {**_given(args, ModelConfig), **_given(args, TrainConfig)}
    if args.units is not None or args.layers is not None:
        default_units = ModelConfig().units
        options["units"] = parse_units(args.units or str(default_units[0]), args.layers)
    try:
        result = train(args.book, name=args.name, root=args.root, resume=args.resume, overwrite=args.overwrite,
                       progress=False if args.quiet else None, log_every=args.log_every, log_format=args.log_format,
                       callbacks=callbacks, **options)
    except TrainingInterrupted as e:  # saved; exit 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
        if args.log_format != "json":  # (the log's "interrupted" event says it in JSON)
            print(f"chargen: {e}", file=sys.stderr)
        return exit_code(e.signum)
    if not args.quiet and args.log_format != "json":
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


def cmd_export(args: argparse.Namespace) -> int:
    import_tensorflow_quietly()
    from chargen.exporting import export

    with native_stderr_hidden():  # the TFLite converter and interpreter log to stderr from C++
        out = export(args.checkpoint, out=args.out, format=args.format, which=args.which, root=args.root,
                     overwrite=args.overwrite)
    print(f"exported {args.format} to {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from chargen.evaluation import DEFAULT_BATCH_SIZE, DEFAULT_SEQ_LEN, comparison_rows, evaluate

    import_tensorflow_quietly()
    result = evaluate(Path(args.book), args.checkpoint, which=args.which, root=args.root,
                      batch_size=DEFAULT_BATCH_SIZE if args.batch_size is None else args.batch_size,
                      seq_len=DEFAULT_SEQ_LEN if args.seq_len is None else args.seq_len,
                      unknown=args.unknown, progress=False if args.quiet else None)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    from chargen.checkpoint import run_of

    run = run_of(Path(result.checkpoint))
    book = "stdin" if args.book == "-" else Path(args.book).name
    table = Table(title=f"{book}: {result.characters:,} characters predicted"
                        + (f", {result.skipped:,} unknown skipped" if result.skipped else ""),
                  caption=f"model: {run.name} ({args.which}), {result.rows} stream{'s' * (result.rows != 1)}")
    for column, justify in (("method", "left"), ("bits/char", "right"), ("size (bytes)", "right"), ("vs lzma", "left")):
        table.add_column(column, justify=justify)
    for method, bpc, size, versus in comparison_rows(result):
        table.add_row(method, f"{bpc:.4f}", f"{size:,}", versus)
    Console().print(table)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from chargen import checkpoint as ckpt
    from chargen.curves import CHART_WIDTH, chart_text, describe, run_history, table

    run = ckpt.resolve_run(args.checkpoint, Path(args.root))
    rows = run_history(run)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console

    # Rich fits tables to 80 columns when stdout is not a terminal; a file or pipe can take the full width.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    if not rows:
        console.print(f"{run.name}: no epoch finished yet")
        return 0
    console.print(table(rows, title=f"{run.name}: {describe(rows)}", compact=console.width < 100))
    console.print(chart_text(rows, width=max(10, min(CHART_WIDTH, console.width - 12))))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    # Must be set before numpy/TensorFlow load: quiet TF's start-up chatter; start numpy's BLAS on
    # one thread (chargen.cores asks for two only where they pay); and let an idle OpenBLAS worker
    # spin for 2^20 cycles (~0.4 ms, not the default 2^28, ~0.1 s) before it sleeps, so a step
    # on one thread after two-thread steps is not slowed by it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")
    args = build_parser().parse_args(argv)
    handler = {"train": cmd_train, "sample": cmd_sample, "export": cmd_export, "eval": cmd_eval,
               "history": cmd_history}[args.command]
    try:
        with TermAndHupStop():  # like Ctrl-C, unless ignored (nohup); training makes the first one a clean stop
            return handler(args)
    except ChargenError as e:
        print(f"chargen: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:  # outside training, or a second signal during it
        signum = getattr(e, "signum", None)
        print(f"chargen: interrupted ({signal_name(signum)})", file=sys.stderr)
        return exit_code(signum)
    except BrokenPipeError:  # e.g. `chargen sample | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
