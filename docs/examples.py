"""Run every example in README.md and docs/*.md and write (or check) the output shown under it.

Docs show what the code prints, so they must be produced by the code. Two kinds of fenced block
are examples:

    ```console                         ```python
    $ chargen sample --seed K ...      gen = chargen.load("alphabet")
    LMNOPQRSTUVWXYZ                    print(gen.generate("K", 10))
    ```                                ```
                                       ```output
                                       LMNOPQRSTU
                                       ```

A `console` block's `$ ` lines are run by bash in order (stdout and stderr together, as a
terminal shows them) and the other lines are their output. A `python` block is run, and when an
`output` block follows it, that block is what it printed. Each markdown file runs in a fresh
folder holding a copy of corpora/ (so `corpora/alphabet.txt` works), its blocks in order, its
python blocks in one interpreter (a later block sees an earlier one's names); paths inside
that folder are shown relative to it, as a reader running the commands would see them.

A server the examples talk to is started by an HTML comment, which readers do not see:
`<!-- examples: background chargen serve --port 8765 ready http://127.0.0.1:8765/v1/model -->`
starts the command there and waits until the URL answers; it is stopped when the file ends.

Blocks in any other language (```sh, ```text) are not run: use them for what cannot run here
(several machines, a GPU, hours of training) and for figures from benchmarks, which carry the
command and date that produced them.

    python docs/examples.py            run them all and rewrite the outputs shown
    python docs/examples.py --check    run them and list every output that differs (exit 1)
    python docs/examples.py --check docs/serving.md     only some files

How outputs compare: text exactly (the spaces around a line aside; a table cell by cell, however
wide its columns came out); numbers within a relative 0.5%, since
the same seeded run can differ in the last digits on another CPU; and numbers that report speed
or time are not compared at all: on lines that say chars/s, seconds, ETA or a date, and in the
columns of a table whose header says so; random 32-hex-digit ids (sessions) stand for any id.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
# <!-- examples: background COMMAND ready URL -->: start COMMAND there, wait for URL to answer, stop it at the end
BACKGROUND = re.compile(r"<!-- examples: background (.+?) ready (\S+) -->")
NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?", re.I)
# Lines whose figures change from run to run: speeds, durations, dates, progress bars.
VOLATILE = re.compile(r"chars/s|tokens/s|\d+(\.\d+)?\s?(s|ms|us|µs|min)\b|ETA|elapsed|\d{4}-\d\d-\d\d|it/s|step/s|"
                      r"seconds|took|MB/s|GB/s|GFLOP", re.I)
REL_TOL = 5e-3
BORDER = re.compile(r"[\s┏┓┗┛┳┻╇┡┩━─┌┐└┘┬┴┼├┤]+")  # the rules of a rich table
RULE_RUN = re.compile(r"[━─]+")
RANDOM_ID = re.compile(r"\b[0-9a-f]{32}\b")  # a session id: new on every run
TIMEOUT = 600


@dataclass
class Block:
    kind: str  # console, python or output
    start: int  # offset of the block's body in the file
    end: int
    body: str


def blocks(text: str) -> list[Block]:
    found = [Block(m.group(1), m.start(2), m.end(2), m.group(2)) for m in FENCE.finditer(text)]
    found += [Block("background", m.start(), m.end(), m.group(1) + "\n" + m.group(2)) for m in BACKGROUND.finditer(text)]
    return sorted(found, key=lambda b: b.start)


def examples(text: str) -> list[tuple[Block, Block | None]]:
    """(example, the block showing its output) pairs: a console block is its own output."""
    found, bs = [], blocks(text)
    for i, b in enumerate(bs):
        if b.kind == "console":
            found.append((b, b))
        elif b.kind == "background":
            found.append((b, None))
        elif b.kind == "python":
            nxt = bs[i + 1] if i + 1 < len(bs) and bs[i + 1].kind == "output" else None
            found.append((b, nxt))
    return found


# ---------------------------------------------------------------- running

def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)  # the chargen console script of this interpreter's environment
    env.update(PATH=bindir + os.pathsep + env.get("PATH", ""), PYTHONPATH=str(ROOT), COLUMNS="100",
               TERM="dumb", NO_COLOR="1", TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0", HOME=str(work))
    env.pop("FORCE_COLOR", None)
    return env


def _relative(text: str, work: Path) -> str:
    """Paths inside the example's folder as the reader's would be: relative to where the commands run."""
    return text.replace(str(work.resolve()) + os.sep, "").replace(str(work) + os.sep, "")


def run_console(body: str, work: Path) -> str:
    """Run each `$ ` command (with its continuation lines) and return the block as it should read."""
    out, command = [], None
    commands = []
    for line in body.splitlines():
        if line.startswith("$ "):
            command = [line[2:]]
            commands.append(command)
        elif command is not None and command[-1].endswith("\\"):
            command.append(line)
    for command in commands:
        script = "\n".join(command)
        proc = subprocess.run(["bash", "-c", script], cwd=work, env=_env(work), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)
        out += ["$ " + command[0], *command[1:]]
        printed = _relative(proc.stdout, work).rstrip("\n")
        if printed:
            out += [line.rstrip() for line in printed.splitlines()]
    return "\n".join(out) + "\n"


RUNNER = """
import contextlib, io, json, sys, traceback
blocks = json.load(open(sys.argv[1], encoding="utf-8"))
ns = {"__name__": "__main__"}
for code in blocks:
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(code, "<example>", "exec"), ns)
    except Exception:
        buf.write(traceback.format_exc(limit=-1))
    print(json.dumps(buf.getvalue()))
    sys.stdout.flush()
"""


def run_python(codes: list[str], work: Path) -> list[str]:
    """Run the blocks in order in one interpreter; return what each printed."""
    (work / ".blocks.json").write_text(json.dumps(codes), encoding="utf-8")
    (work / ".runner.py").write_text(RUNNER, encoding="utf-8")
    proc = subprocess.run([sys.executable, ".runner.py", ".blocks.json"], cwd=work, env=_env(work),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=TIMEOUT)
    printed = [_relative(json.loads(line), work) for line in proc.stdout.splitlines() if line.startswith('"')]
    if len(printed) != len(codes):
        raise RuntimeError(f"the python examples stopped early:\n{proc.stderr[-3000:]}")
    return ["\n".join(line.rstrip() for line in p.rstrip("\n").splitlines()) + "\n" if p.strip() else "" for p in printed]


def start_background(spec: str, work: Path) -> subprocess.Popen:
    """Start a command (a server, say) in its own process group and wait until its URL answers."""
    import time
    import urllib.request

    command, url = spec.split("\n")
    log = open(work / ".background.log", "w+b")  # noqa: SIM115 (read back if it fails; the temp folder goes)
    proc = subprocess.Popen(["bash", "-c", command], cwd=work, env=_env(work), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_background(proc)
                log.seek(0)
                said = log.read().decode(errors="replace").strip()[-2000:]
                raise RuntimeError(f"{command!r} did not answer at {url}; it said:\n{said}") from None
            time.sleep(0.2)


def stop_background(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    except ProcessLookupError:  # already gone
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_file(path: Path) -> list[tuple[Block, str]]:
    """(output block, what it should now say) for every example of one markdown file."""
    pairs = examples(path.read_text(encoding="utf-8"))
    if not pairs:
        return []
    work = Path(tempfile.mkdtemp(prefix="chargen-examples-"))
    background: list[subprocess.Popen] = []
    try:
        shutil.copytree(ROOT / "corpora", work / "corpora")
        results: list[tuple[Block, str]] = []
        pending: list[tuple[Block | None, str]] = []  # python blocks wait to run together, in order

        def flush():
            if pending:
                for (shown, _), printed in zip(pending, run_python([code for _, code in pending], work)):
                    if shown is not None:
                        results.append((shown, printed))
                pending.clear()

        for example, shown in pairs:
            if example.kind == "background":
                flush()
                background.append(start_background(example.body, work))
            elif example.kind == "console":
                flush()  # a command may read what the python before it wrote
                results.append((shown, run_console(example.body, work)))
            else:
                pending.append((shown, example.body))
        flush()
        return results
    finally:
        for proc in background:
            stop_background(proc)
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- comparing

def same(shown: str, printed: str) -> bool:
    a, b = shown.rstrip("\n").splitlines(), printed.rstrip("\n").splitlines()
    if len(a) != len(b):
        return False
    volatile_columns: set[int] = set()
    for x, y in zip(a, b):
        x, y = x.strip(), y.strip()  # centred titles move with the table's width
        if "┃" in x:  # a table's header row: its speed and time columns are not compared below it
            volatile_columns = {i for i, cell in enumerate(x.split("┃")) if VOLATILE.search(cell)}
        if BORDER.fullmatch(x):  # a table's rule: a column as wide as its widest figure is not a difference
            if RULE_RUN.sub("─", x) != RULE_RUN.sub("─", y):
                return False
        elif "│" in x or "┃" in x:  # a table's row: cell by cell, the padding aside
            bar = "│" if "│" in x else "┃"
            xs, ys = x.split(bar), y.split(bar)
            if len(xs) != len(ys) or not all(_same_line(cx.strip(), cy.strip(), i in volatile_columns)
                                             for i, (cx, cy) in enumerate(zip(xs, ys))):
                return False
        elif not _same_line(x, y):
            return False
    return True


def _same_line(a: str, b: str, volatile: bool = False) -> bool:
    a, b = RANDOM_ID.sub("<id>", a), RANDOM_ID.sub("<id>", b)
    if NUMBER.sub("#", a) != NUMBER.sub("#", b):
        return False
    if volatile or VOLATILE.search(a):
        return True
    for x, y in zip(NUMBER.findall(a), NUMBER.findall(b)):
        if x == y:
            continue
        fx, fy = float(x.replace(",", "")), float(y.replace(",", ""))
        if abs(fx - fy) > REL_TOL * max(abs(fx), abs(fy)):
            return False
    return True


def _shown_name(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="*", type=Path, help="markdown files (default: README.md and docs/*.md)")
    p.add_argument("--check", action="store_true", help="do not rewrite; list outputs that differ and exit 1")
    args = p.parse_args(argv)
    files = args.files or [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    stale = 0
    for path in files:
        results = run_file(path)
        text = path.read_text(encoding="utf-8")
        for shown, printed in sorted(results, key=lambda r: -r[0].start):  # from the end: offsets stay valid
            if same(shown.body, printed):
                continue
            stale += 1
            if args.check:
                diff = difflib.unified_diff(shown.body.splitlines(), printed.splitlines(), "shown", "printed now",
                                            lineterm="")
                line = text.count("\n", 0, shown.start) + 1
                print(f"{_shown_name(path)}:{line}: the output shown there is stale:\n"
                      + "\n".join(diff) + "\n")
            else:
                text = text[:shown.start] + printed + text[shown.end:]
        if not args.check:
            path.write_text(text, encoding="utf-8")
        print(f"{_shown_name(path)}: {len(results)} outputs checked", file=sys.stderr)
    if args.check and stale:
        print(f"{stale} output(s) differ from what the code prints; run: python docs/examples.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
