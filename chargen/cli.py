"""The command line. The only place that turns a ChargenError into a message and an exit code.

Every failure a user can cause is one line on stderr and exit code 2, never a traceback: argparse's
own errors too (`_Parser`), and options are checked before TensorFlow loads (it takes seconds).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from dataclasses import MISSING
from typing import Any, Sequence

from chargen import __version__
from chargen._quiet import import_tensorflow_quietly, native_stderr_hidden
from chargen.config import ModelConfig, SampleConfig, ServeConfig, TrainConfig, cli_fields, parse_units, positive_int
from chargen.config import flag as field_flag
from chargen.errors import ChargenError, ConfigError
from chargen.signals import TermAndHupStop, exit_code, signal_name

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (the problem and where help is) and exit 2, not the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"chargen: error: {message} (see {self.prog} --help)\n")


def _add_fields(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per dataclass field (config.flag names it), help, default and choices taken from the field itself."""
    for f in cli_fields(cls):
        flag = field_flag(f.name)
        default = f.default if f.default is not MISSING else None
        kind = str if f.name == "units" or f.type == "str" else (int if f.type in ("int", "int | None") else float)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        said = "(default:" in f.metadata["help"] or default is None  # explains its own default, or has none
        allowed = f.metadata.get("choices")  # argparse refuses anything else, and --help shows them as {a,b}
        parser.add_argument(flag, *f.metadata.get("aliases", ()), dest=f.name, type=kind, default=None, choices=allowed,
                            metavar=None if allowed else flag[2:].replace("-", "_").upper(),
                            help=f.metadata["help"] + ("" if said else f" (default: {shown})"))


def said(error: ChargenError) -> str:
    """An error as the command line says it: each argument its message names (error.arguments), as its flag
    (batch_size -> --batch-size), so a library caller reads the names it passes and a shell user the flags."""
    text = str(error)
    for name in error.arguments:
        text = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", field_flag(name), text)
    return text


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="chargen", description="Character-level text generation with stateful LSTMs or GRUs.")
    p.add_argument("--version", action="version", version=f"chargen {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="learn a whole book (a UTF-8 file, a folder of .txt files, or - for stdin)",
                       description="Learn a whole book with stateful LSTM (or --cell gru) layers and save checkpoints "
                                   "in --root/--name. BOOK is a UTF-8 text file, a folder of .txt files (read in name "
                                   "order, joined by newlines), or - to read standard input. The last part of the text "
                                   "(--val-fraction) "
                                   "is held out for validation; `best` and `last` snapshots are kept. Ctrl-C saves a "
                                   "checkpoint that --resume continues.")
    t.add_argument("book", metavar="BOOK", help="the text to learn: a file, a folder of .txt files, or - for stdin")
    _add_fields(t, ModelConfig)
    t.add_argument("--layers", type=int, default=None, help="number of recurrent layers, with one --units number")
    _add_fields(t, TrainConfig)
    t.add_argument("--name", help="checkpoint folder name under --root (default: the book's file name)")
    t.add_argument("--root", default="checkpoints", help="where checkpoints go (default: checkpoints)")
    t.add_argument("--resume", action="store_true", help="continue the run in --root/--name from its last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    t.add_argument("--init-from", default=None, metavar="RUN",
                   help="fine-tune: start from this run's weights (a run name under --root, or a folder), with its "
                        "model and tokenizer and a fresh optimizer and schedule (docs/checkpoints.md)")
    t.add_argument("--which", choices=("best", "last"), default=None,
                   help="with --init-from: the snapshot to start from (default: best)")
    t.add_argument("--new-chars", choices=("extend", "error"), default=None,
                   help="with --init-from: characters of BOOK the run never saw are added to its vocabulary "
                        "(extend) or refused (error) (default: extend)")
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

    s = sub.add_parser("sample", help="stream a continuation of --seed from a checkpoint",
                       description="Continue a seed text from a checkpoint, printing each character as it is "
                                   "generated. The seed is --seed TEXT, --seed - (standard input) or --seed-file PATH, "
                                   "used exactly as given (a final newline included); without one, generation starts "
                                   "from a zero state. --num-samples N generates N continuations together; --json "
                                   "prints one JSON object per sample and line for scripts.")
    seed = s.add_mutually_exclusive_group()
    seed.add_argument("--seed", default="", metavar="TEXT",
                      help="text to continue, or - to read it from standard input (default: start from zero state)")
    seed.add_argument("--seed-file", default=None, metavar="PATH", help="read the text to continue from a UTF-8 file")
    s.add_argument("--checkpoint", default=None, help="run name under --root or a folder (default: the newest run)")
    s.add_argument("--which", choices=("best", "last"), default="best", help="snapshot to load (default: best)")
    s.add_argument("--root", default="checkpoints", help="where checkpoints are (default: checkpoints)")
    s.add_argument("--unknown", choices=("error", "skip"), default="error",
                   help="seed characters not in the vocabulary: stop with an error or skip them")
    s.add_argument("--num-samples", type=int, default=1, metavar="N",
                   help="generate N independent samples at once (default: 1); live on a terminal, "
                        "one after another otherwise")
    s.add_argument("--echo-seed", dest="echo", action="store_true", help="print the seed before its continuation")
    s.add_argument("--json", action="store_true",
                   help='print one JSON object per sample and line: {"sample": 1, "seed": SEED, "text": CONTINUATION} '
                        "(JSON Lines; the seed is never repeated in text)")
    s.add_argument("--stop", action="append", default=None, metavar="TEXT",
                   help="end the text as soon as it contains TEXT, which is kept as its end; repeat for several; "
                        r"\n, \t, \r and \\ stand for newline, tab, return and backslash")
    s.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="fp32 (the exact engine) or int8 (int8 weights run by LiteRT: several times faster, close "
                        "but not equal; converted once per snapshot and cached) (default: fp32)")
    _add_fields(s, SampleConfig)

    x = sub.add_parser("export", help="write a checkpoint as a single-step SavedModel or TFLite model or a Keras model "
                                      "for other programs, or as a web page that generates in the browser",
                       description="Write a checkpoint as a batch-1 model that takes one character id and the "
                                   "recurrent state and returns the next logits and the new state, for any TensorFlow runtime "
                                   "(a SavedModel folder) or TFLite; as a .keras file of stock Keras layers that keep "
                                   "their own state; or as a static web page that generates in the browser "
                                   "(docs/web.md). tokenizer.json and chargen_export.json go beside it "
                                   "(docs/export.md). The export is checked against chargen's own step before it is "
                                   "put in place.")
    x.add_argument("checkpoint", nargs="?", default=None, metavar="NAME",
                   help="run name under --root or a folder (default: the newest run)")
    x.add_argument("--format", choices=("savedmodel", "tflite", "keras", "web"), default="savedmodel",
                   help="savedmodel (a folder for any TensorFlow runtime), tflite, keras (model.keras: stock layers, "
                        "keras.saving.load_model loads it without chargen), or web (a static page that generates in "
                        "the browser, see docs/web.md) (default: savedmodel)")
    x.add_argument("--out", default=None, metavar="DIR", help="folder to write (default: exports/NAME-FORMAT)")
    x.add_argument("--which", choices=("best", "last"), default="best", help="snapshot to export (default: best)")
    x.add_argument("--root", default="checkpoints", help="where checkpoints are (default: checkpoints)")
    x.add_argument("--overwrite", action="store_true", help="replace an existing export in --out")

    e = sub.add_parser("eval", help="bits per character of a checkpoint on a text, next to gzip, bz2 and lzma",
                       description="Score a checkpoint on a text in bits per character (lower is better), beside what "
                                   "gzip, bz2 and lzma need for the same text. The text is split into --batch-size "
                                   "contiguous streams that carry their recurrent state from step to step, as in training.")
    e.add_argument("book", help="the text to score: a UTF-8 file, a folder of .txt files, or - for stdin")
    e.add_argument("--checkpoint", default=None, help="run name under --root or a folder (default: the newest run)")
    e.add_argument("--which", choices=("best", "last"), default="best", help="snapshot to score (default: best)")
    e.add_argument("--root", default="checkpoints", help="where checkpoints are (default: checkpoints)")
    e.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="contiguous streams the text is split into; fewer for a short text (default: 32)")
    e.add_argument("--seq-len", type=int, default=None, metavar="T", help="characters per stream per step (default: 256)")
    e.add_argument("--unknown", choices=("error", "skip"), default="error",
                   help="characters not in the vocabulary: stop with an error or drop them")
    e.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="score with the fp32 model or the int8 generation engine (default: fp32)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")

    v = sub.add_parser("serve", help="serve a checkpoint over HTTP: a JSON/streaming API and a playground page "
                                     "(needs pip install 'chargen[serve]')",
                       description="Serve a checkpoint over HTTP on 127.0.0.1 (by default): POST /v1/generate (JSON "
                                   "or server-sent events), GET /v1/model, and a playground page at /. Every client's "
                                   "stream is stepped together with the others (continuous batching). Needs "
                                   "pip install 'chargen[serve]'; see docs/serving.md.")
    v.add_argument("--checkpoint", default=None, help="run name under --root or a folder (default: the newest run)")
    v.add_argument("--which", choices=("best", "last"), default="best", help="snapshot to serve (default: best)")
    v.add_argument("--root", default="checkpoints", help="where checkpoints are (default: checkpoints)")
    _add_fields(v, ServeConfig)

    h = sub.add_parser("history", help="a run's per-epoch losses as a table and a terminal chart",
                       description="Show a run's per-epoch training and validation losses as a table and a terminal "
                                   "chart, or as JSON with --json. Needs neither TensorFlow nor the weights, so it "
                                   "also works on a run that is still training.")
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
        stderr_line(json_line("error", message=f"chargen: error: {said(e)}", exit_code=EXIT_USAGE))
        return EXIT_USAGE


def _train(args: argparse.Namespace) -> int:
    from chargen.trainer import check_train_args

    callbacks = _train_callbacks(args)  # bad flags fail at once, before TensorFlow or the book
    options = {**_given(args, ModelConfig), **_given(args, TrainConfig)}
    if args.units is not None or args.layers is not None:
        default_units = ModelConfig().units
        options["units"] = parse_units(str(default_units[0]) if args.units is None else args.units, args.layers)
    where = dict(name=args.name, root=args.root, resume=args.resume, overwrite=args.overwrite,
                 progress=False if args.quiet else None, log_every=args.log_every, log_format=args.log_format,
                 callbacks=callbacks, init_from=args.init_from, init_which=args.which, new_chars=args.new_chars)
    check_train_args(args.book, **where, **options)  # every check that needs neither TensorFlow nor the book
    import_tensorflow_quietly()
    from chargen.trainer import TrainingInterrupted, train

    try:
        result = train(args.book, **where, **options)
    except TrainingInterrupted as e:  # saved; exit 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
        if args.log_format != "json":  # (the log's "interrupted" event says it in JSON)
            print(f"chargen: {e}", file=sys.stderr)
        return exit_code(e.signum)
    if not args.quiet and args.log_format != "json":
        print(f"checkpoint: {result.run_dir}  (sample with: {sample_command(result.run_dir)})", file=sys.stderr)
    return 0


def sample_command(run_dir) -> str:
    """`chargen sample` for this run, quoted for a POSIX shell; a --root other than the default is made absolute,
    so the command samples this run wherever it is pasted (with the default root: from the folder trained in)."""
    from chargen.checkpoint import DEFAULT_ROOT

    args = ["chargen", "sample", "--checkpoint", run_dir.name]
    if run_dir.parent != DEFAULT_ROOT:
        args += ["--root", os.path.abspath(run_dir.parent)]
    return shlex.join(args)


def cmd_sample(args: argparse.Namespace) -> int:
    from chargen.checkpoint import check_which, read_config, resolve_run, snapshot_dir
    from chargen.corpus import read_seed
    from chargen.generate import check_sampling_fits, load
    from chargen.stops import check_stops, unescape

    cfg = SampleConfig(**_given(args, SampleConfig)).validate()  # bad options fail before loading
    positive_int("num_samples", args.num_samples)
    check_which(args.which)
    if args.seed_file is not None:
        seed = read_seed(args.seed_file, "--seed-file")
    else:
        seed = read_seed("-", "--seed -") if args.seed == "-" else args.seed
    stop = check_stops([unescape(s) for s in args.stop or []])
    run = resolve_run(args.checkpoint, args.root)
    if args.num_samples > 1:  # rows that could not fit are refused before TensorFlow loads
        check_sampling_fits(read_config(snapshot_dir(run, args.which) / "config.json")[0], args.num_samples, cfg.length)
    import_tensorflow_quietly()
    gen = load(run, which=args.which, root=args.root, precision=args.precision)
    _check_output_encoding(gen.tokenizer.tokens, seed)
    if args.json or args.num_samples != 1:
        return _sample_many(gen, args, cfg, seed, stop)
    out = sys.stdout
    out.write(seed if args.echo else "")
    for piece in gen.stream(seed, unknown=args.unknown, stop=stop, sample=cfg):
        out.write(piece)
        out.flush()  # text appears as it is generated
    out.write("\n")
    out.flush()
    return 0


def _check_output_encoding(tokens: list[str], seed: str) -> None:
    """ConfigError, before any text is written, if stdout's encoding cannot write a character the model can
    generate (or the seed): refused rather than replaced, so the output is never silently different."""
    encoding = sys.stdout.encoding or "utf-8"
    chars = set("".join(tokens)) | set(seed)
    if _encodes("".join(chars), encoding):
        return
    bad = sorted(c for c in chars if not _encodes(c, encoding))
    shown = ", ".join(repr(c) for c in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
    raise ConfigError(f"standard output's encoding ({encoding}) cannot write {len(bad)} character"
                      f"{'s' * (len(bad) != 1)} this model can generate ({shown}); set PYTHONIOENCODING=utf-8 "
                      "(or use a UTF-8 locale, e.g. LANG=C.UTF-8)")


def _encodes(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _sample_many(gen, args: argparse.Namespace, cfg: SampleConfig, seed: str, stop: tuple[str, ...]) -> int:
    """N samples generated together: JSON lines with --json, shown growing live on a terminal, else printed in turn."""
    steps = gen.stream_many(seed, args.num_samples, unknown=args.unknown, stop=stop, sample=cfg)
    prefix = seed if args.echo and not args.json else ""
    texts = [[prefix] for _ in range(args.num_samples)]
    if sys.stdout.isatty() and not args.json:
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
    if args.json:
        import json

        for i, t in enumerate(texts):
            sys.stdout.write(json.dumps({"sample": i + 1, "seed": seed, "text": "".join(t)}, ensure_ascii=False) + "\n")
    else:
        for i, t in enumerate(texts):
            sys.stdout.write(f"--- sample {i + 1} ---\n" + "".join(t) + "\n")
    sys.stdout.flush()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from chargen.checkpoint import check_which, resolve_run

    check_which(args.which)
    resolve_run(args.checkpoint, args.root)  # a bad name or --root fails before TensorFlow loads
    from chargen.exporters import NEEDS_TENSORFLOW, export

    if args.format in NEEDS_TENSORFLOW:  # the web format is plain arrays and files: no TensorFlow to wait for
        import_tensorflow_quietly()

    with native_stderr_hidden():  # the TFLite converter and interpreter log to stderr from C++
        out = export(args.checkpoint, out=args.out, format=args.format, which=args.which, root=args.root,
                     overwrite=args.overwrite)
    print(f"exported {args.format} to {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from chargen.checkpoint import read_config, resolve_run, snapshot_dir
    from chargen.evaluation import (DEFAULT_BATCH_SIZE, DEFAULT_SEQ_LEN, check_options, check_scoring_fits,
                                    comparison_rows, evaluate)

    options = dict(which=args.which, batch_size=DEFAULT_BATCH_SIZE if args.batch_size is None else args.batch_size,
                   seq_len=DEFAULT_SEQ_LEN if args.seq_len is None else args.seq_len, unknown=args.unknown)
    check_options(**options)  # before TensorFlow loads
    run = resolve_run(args.checkpoint, args.root)
    check_scoring_fits(read_config(snapshot_dir(run, args.which) / "config.json")[0], 1, options["seq_len"])  # 1 row at least
    import_tensorflow_quietly()
    result = evaluate(Path(args.book), args.checkpoint, root=args.root, progress=False if args.quiet else None,
                      precision=args.precision, **options)
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
                  caption=f"model: {run.name} ({args.which}{', int8' if result.precision == 'int8' else ''}), "
                          f"{result.rows} stream{'s' * (result.rows != 1)}")
    for column, justify in (("method", "left"), ("bits/char", "right"), ("size (bytes)", "right"), ("vs lzma", "left")):
        table.add_column(column, justify=justify)
    for method, bpc, size, versus in comparison_rows(result):
        table.add_row(method, f"{bpc:.4f}", f"{size:,}", versus)
    Console().print(table)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from chargen.serve.server import bind, check_installed, serve

    cfg = ServeConfig(**_given(args, ServeConfig)).validate()  # bad flags, a missing extra and a busy port fail
    check_installed()                                          # before TensorFlow loads
    sock = bind(cfg.host, cfg.port)
    import_tensorflow_quietly()
    serve(args.checkpoint, which=args.which, root=args.root, config=cfg, sock=sock)
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
    chart = chart_text(rows, width=max(10, min(CHART_WIDTH, console.width - 12)))
    if not _encodes(chart.plain, sys.stdout.encoding or "utf-8"):  # e.g. PYTHONIOENCODING=latin-1: ASCII marks
        from rich.text import Text

        chart = Text(chart.plain.translate(str.maketrans("●○◉┤│└─", "*o@+|+-")))
    console.print(chart)
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
               "history": cmd_history, "serve": cmd_serve}[args.command]
    try:
        with TermAndHupStop():  # like Ctrl-C, unless ignored (nohup); training makes the first one a clean stop
            return handler(args)
    except ChargenError as e:
        print(f"chargen: error: {said(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:  # outside training, or a second signal during it
        signum = getattr(e, "signum", None)
        print(f"chargen: interrupted ({signal_name(signum)})", file=sys.stderr)
        return exit_code(signum)
    except BrokenPipeError:  # e.g. `chargen sample | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (OSError, MemoryError) as e:  # the machine, not chargen: a disk, a permission, memory; say it in one line
        what = "out of memory" if isinstance(e, MemoryError) else str(e)
        print(f"chargen: error: {what}; check the paths, free space and memory, then try again", file=sys.stderr)
        return EXIT_USAGE
