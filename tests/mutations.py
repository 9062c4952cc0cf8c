"""Plant one plausible bug at a time in a copy of the repository and see which tests catch it.

    python tests/mutations.py                 # every mutation in the table
    python tests/mutations.py NAME_PART ...   # those whose name contains one of the words
    python tests/mutations.py --list

For each row of MUTATIONS (the only place that knows file paths) the exact old snippet is
replaced by the new one in a temporary copy of this repository (tracked and untracked files),
the row's tests run there (that copy's chargen first on PYTHONPATH, so the CLI subprocesses the
tests start import it too), and one line is printed: "planted bug -> caught by <failing tests>"
or "... -> NOT CAUGHT". A snippet that is not in its file is an error before anything runs: a
stale mutation must never pass silently. The rows' tests are first run unmutated, and must
pass, so a failure is the planted bug's. Exit status 0 only if every bug was caught.

Stdlib only; runs under `nice` (each row starts pytest and most train a tiny model).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LOOP, CKPT, GEN, NET = "chargen/loop.py", "chargen/checkpoint/writing.py", "chargen/generate.py", "chargen/net/"
LOOP_TESTS = ["tests/test_loop_state.py"]
RESUME_TESTS = ["tests/test_resume_exact.py"]
CELL_TESTS = ["tests/test_cells.py", "tests/test_cores.py"]
CRASH_TESTS = ["tests/test_crash_consistency.py"]
BATCH = "                x, y = self.streams.batch(self.step)\n"

# (planted bug, file, exact old snippet, new snippet, tests to run); a tuple of snippets plants several edits.
MUTATIONS: list[tuple[str, str, str | tuple[str, ...], str | tuple[str, ...], list[str]]] = [
    # ---- issue #10's table
    ("state reset before every batch (layer.reset_state() on each stateful layer)", LOOP, BATCH,
     BATCH + "                for layer in self.model.layers:\n                    if getattr(layer, 'stateful', False):\n"
             "                        layer.reset_state()\n", LOOP_TESTS),
    ("rows trade streams on odd batches (np.roll(x, 1, axis=0))", LOOP, BATCH,
     BATCH + "                x = np.roll(x, 1, axis=0) if self.step % 2 else x\n", LOOP_TESTS),
    ("batches fed in reverse order inside the epoch", LOOP, BATCH,
     "                x, y = self.streams.batch(n - 1 - self.step)\n", LOOP_TESTS),
    ("no reset at the epoch start", LOOP, "            reset_state(self.model)  # the start of every epoch",
     "            pass  # the start of every epoch", LOOP_TESTS),
    ("--resume forgets the training rows' LSTM state", LOOP,
     "        if snap.train_state is not None:\n            self.engine.restore_train_state(",
     "        if False:\n            self.engine.restore_train_state(", RESUME_TESTS),
    ("a snapshot written in place (no temporary folder, no rename)", CKPT,
     ('    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{snap_id}-", dir=snaps))\n',
      "        final, n = snaps / snap_id, 1\n        while final.exists() or final.is_symlink():\n"
      '            final, n = snaps / f"{snap_id}.{n}", n + 1\n        os.replace(tmp, final)\n'),
     ("    tmp = snaps / snap_id\n    tmp.mkdir(exist_ok=True)\n", "        final = tmp\n"), CRASH_TESTS),
    ("every fsync removed", CKPT, "os.fsync(", "(lambda fd: None)(", CRASH_TESTS),
    ("the Generator loads weights wrongly (output bias zeroed)", GEN,
     '        ckpt.assign_weights(self.model, weights, source or Path("<weights>"))',
     '        ckpt.assign_weights(self.model, weights[:-1] + [np.zeros_like(weights[-1])], source or Path("<weights>"))',
     ["tests/test_batch1_copy.py", "tests/test_generate.py"]),
    ("Generator.prime ignores the current state", GEN, "        set_state(self.model, self._state)\n",
     "        set_state(self.model, self.zero_state())\n", ["tests/test_batch1_copy.py", "tests/test_generate.py"]),
    ("many-row halves returned in swapped order", "chargen/cores.py",
     "        self._helper.both(part(0), part(1))\n        return out\n",
     "        self._helper.both(part(0), part(1))\n        return out[::-1]\n",
     ["tests/test_cores_threads.py", "tests/test_cores.py"]),
    # ---- the loop and validation
    ("validation runs on the training model", LOOP,
     "self.eval_model = build_model(mcfg, val_streams.batch_size, tcfg.seq_len) if val_streams else None",
     "self.eval_model = self.model if val_streams else None", LOOP_TESTS),
    ("a reset in validation that touches the training model", LOOP,
     "        reset_state(self.eval_model)\n        total = 0.0\n", "        reset_state(self.model)\n        total = 0.0\n",
     LOOP_TESTS),
    ("validation does not carry state from batch to batch", LOOP,
     "            total += float(self._eval_step(",
     "            reset_state(self.eval_model)\n            total += float(self._eval_step(", LOOP_TESTS),
    ("validation not reset at its start", LOOP, "        reset_state(self.eval_model)\n        total = 0.0\n",
     "        total = 0.0\n", LOOP_TESTS),
    ("stream layout transposed (rows interleaved, not contiguous)", "chargen/streams.py",
     "ids[: batch_size * per_stream].reshape(batch_size, per_stream)",
     "ids[: batch_size * per_stream].reshape(per_stream, batch_size).T", LOOP_TESTS + ["tests/test_streams.py"]),
    ("targets not shifted by one", "chargen/streams.py", "y = self.data[:, k * t + 1:(k + 1) * t + 1]",
     "y = self.data[:, k * t:(k + 1) * t]", LOOP_TESTS + ["tests/test_streams.py"]),
    ("last batch of the epoch dropped", LOOP, "while self.step < n and not self.stop_requested:",
     "while self.step < n - 1 and not self.stop_requested:", LOOP_TESTS),
    ("last batch fed twice (first skipped)", LOOP, BATCH,
     "                x, y = self.streams.batch(min(self.step + 1, n - 1))\n", LOOP_TESTS),
    ("the training kernel does not carry its state to the next batch", NET + "fast_layer.py",
     "        for v, value in zip(self.states, (hs[-1], *carries_last)):\n            v.assign(value)\n", "", LOOP_TESTS),
    ("`best` moved on a non-improving epoch", LOOP, "improved = self.best is None or score < self.best",
     "improved = True", LOOP_TESTS),
    # ---- resuming
    ("resume restores the state into the wrong rows", "chargen/distributed.py",
     "check_state([tuple(flat[i:i + k]) for i in range(0, n, k)]",
     "check_state([tuple(a[::-1] for a in flat[i:i + k]) for i in range(0, n, k)]", RESUME_TESTS),
    ("progress step saved one off (mid-epoch)", LOOP, '"step": self.step, "best_loss"',
     '"step": self.step + 1 if self.step else 0, "best_loss"', RESUME_TESTS),
    ("resume forgets the optimizer state", LOOP, "        for v, a in zip(opt_vars, saved):\n            v.assign(a)",
     "        for v, a in zip(opt_vars, saved):\n            pass", RESUME_TESTS),
    ("resume forgets the dropout RNG state", "chargen/distributed.py",
     "            for v, a in zip(rng, seeds):\n                v.assign(a)\n",
     "            for v, a in zip(rng, seeds):\n                pass\n", RESUME_TESTS),
    ("resume forgets the interrupted epoch's loss sums", LOOP, 'self.partial = dict(p.get("partial") or self.partial)',
     "self.partial = dict(self.partial)", RESUME_TESTS),
    ("--resume takes another text", "chargen/trainer.py", "    if snap is not None:\n        _check_same_book(",
     "    if False:\n        _check_same_book(", ["tests/test_resume_book.py"]),
    # ---- the Generator and its numpy step
    ("set_state forgets the next-token distribution (the start token is fed again)", GEN,
     "self._logits = None if start else self.stepper.logits(state[-1][0])[0]", "self._logits = None",
     ["tests/test_state_roundtrip.py"]),
    ("set_state accepts (and broadcasts) a wrong-shaped state", "chargen/net/model.py", "if arr.shape != tuple(shape):",
     "if arr.ndim != len(shape):", ["tests/test_model_state.py", "tests/test_generate.py::test_state_api"]),
    ("the numpy step stacks a deeper LSTM layer's weights as [h, x] (weights copied wrongly)", NET + "lstm.py",
     "np.vstack([kernel, recurrent_kernel])", "np.vstack([recurrent_kernel, kernel])",
     ["tests/test_batch1_copy.py", "tests/test_cores.py"]),
    ("the Generator takes each layer's bias from the wrong layer", NET + "layout.py",
     'by_name[f"{cell.name}_{i}/{role}"]',
     'by_name[f"{cell.name}_{len(cfg.units) - 1 - i if role == \'bias\' else i}/{role}"]', ["tests/test_batch1_copy.py"]),
    ("eval does not carry state from batch to batch", "chargen/evaluation.py",
     "            x, y, weight = self.batch(k)\n            total += float(summed_nats(",
     "            reset_state(model)\n            x, y, weight = self.batch(k)\n            total += float(summed_nats(",
     ["tests/test_evaluate.py"]),
    # ---- checkpoints on disk
    ("pruning deletes the snapshot `last` names", "chargen/checkpoint/pointers.py", "    for name in POINTERS:\n",
     '    for name in ("best",):\n',
     LOOP_TESTS + ["tests/test_reliability.py::test_a_crash_at_every_step_of_a_snapshot_write_leaves_last_complete"]),
    ("the first save names snapshots/ before the run folder's entry for it is on disk", CKPT,
     "        fsync_path(run_dir)  # the folder's own name on disk before a pointer names anything in it\n", "",
     CRASH_TESTS[0] + "::test_a_training_run_never_leaves_last_best_or_its_copies_half_written"),
    ("write_atomic (the run folder's copies) without fsync", CKPT,
     "            f.flush()\n            os.fsync(f.fileno())\n        os.chmod(tmp, file_mode())",
     "            f.flush()\n        os.chmod(tmp, file_mode())",
     CRASH_TESTS[0] + "::test_a_training_run_never_leaves_last_best_or_its_copies_half_written"),
    ("a snapshot's array files (safetensors) not synced", "chargen/checkpoint/tensors.py", "        os.fsync(fd)\n",
     "        pass\n", CRASH_TESTS),
    ("a pointer (or link) leading out of the run's snapshots/ accepted", "chargen/checkpoint/pointers.py",
     "    if os.path.dirname(target) != inside:\n", "    if False:\n",
     ["tests/test_links_and_modes.py", "tests/test_portable_runs.py"]),
    ("a safetensors header whose byte ranges overlap accepted", "chargen/checkpoint/tensors.py",
     "        if begin != at:\n", "        if begin > at:\n", ["tests/test_named_weights.py"]),
    ("the run folder's history copy written in place", LOOP,
     'ckpt.write_atomic(self.run_dir / "history.jsonl", files["history.jsonl"])',
     '(self.run_dir / "history.jsonl").write_text(files["history.jsonl"], encoding="utf-8")',
     CRASH_TESTS[0] + "::test_a_training_run_never_leaves_last_best_or_its_copies_half_written"),
    # ---- the GRU (chargen/net/gru.py, its web step in chargen/web/chargen.js)
    ("GRU numpy step: z and 1 - z swapped", NET + "gru.py",
     "        out = h[:, part.units] - hh  # z h + (1 - z) hh = hh + z (h - hh)\n        out *= zr[:, :w]\n        out += hh\n",
     "        out = hh - h[:, part.units]\n        out *= zr[:, :w]\n        out += h[:, part.units]\n", CELL_TESTS),
    ("GRU numpy step: the reset gate applied before the recurrent product (reset_after=False)", NET + "gru.py",
     "        hh = m[:, 2 * w:]\n        hh *= zr[:, w:]\n",
     "        hh = (h * zr[:, w:]) @ part.recurrent[:, 2 * w:] + part.recurrent_bias[2 * w:]\n", CELL_TESTS),
    ("GRU training kernel: d(m_h) without the reset gate", NET + "gru.py",
     "tf.concat([d_z, d_r, d_h * r], axis=1)", "tf.concat([d_z, d_r, d_h], axis=1)", CELL_TESTS),
    ("GRU fast layer: input and recurrent biases swapped", NET + "gru.py", "        return bias[0], bias[1]",
     "        return bias[1], bias[0]", CELL_TESTS),
    ("GRU exported step graph without the recurrent bias", NET + "gru.py",
     '        m = tf.matmul(h, arrays["recurrent_kernel"]) + arrays["recurrent_bias"]',
     '        m = tf.matmul(h, arrays["recurrent_kernel"])', CELL_TESTS + ["tests/test_export.py"]),
    ("GRU web step: z and 1 - z swapped", "chargen/web/chargen.js", "h[j] = z * s.h[j] + (1 - z) * hh;",
     "h[j] = (1 - z) * s.h[j] + z * hh;",
     ["tests/test_web_browser.py::test_probabilities_match_the_numpy_engine_over_200_steps"]),
    ("a restored GRU state put into the wrong layer's place (state tensors per layer miscounted)",
     "chargen/distributed.py", "        k = len(names)  # state tensors per layer", "        k = 2", RESUME_TESTS),
    # ---- the test set-up itself
    ("conftest sets OPENBLAS_NUM_THREADS after numpy is imported", "tests/conftest.py",
     'os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")\nos.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")\n\n'
     "import numpy as np  # noqa: E402\n",
     'import numpy as np  # noqa: E402\n\nos.environ.setdefault("OPENBLAS_NUM_THREADS", "1")\n'
     'os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")\n',
     ["tests/test_cores_threads.py::test_numpys_blas_runs_on_the_thread_count_conftest_sets"]),
]


def _edits(row) -> list[tuple[str, str]]:
    _, _, old, new, _ = row
    return list(zip(old, new)) if isinstance(old, tuple) else [(old, new)]


def _tests(row) -> list[str]:
    tests = row[4]
    return [tests] if isinstance(tests, str) else list(tests)


def check_table(rows) -> list[str]:
    """Problems that make a row unusable: a missing file, or an old snippet not in it."""
    problems = []
    for row in rows:
        name, path = row[0], REPO / row[1]
        if not path.is_file():
            problems.append(f"{name}: {row[1]} does not exist")
            continue
        text = path.read_text(encoding="utf-8")
        for old, _ in _edits(row):
            if old not in text:
                problems.append(f"{name}: snippet not found in {row[1]}: {old[:70]!r}")
        for test in _tests(row):
            if not (REPO / test.split("::")[0]).is_file():
                problems.append(f"{name}: no test file {test.split('::')[0]}")
    return problems


def copy_repo(dest: Path) -> None:
    """Tracked and untracked (not ignored) files of this repository, or everything but caches without git."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".*_cache",
                                                                  "checkpoints", "exports"))
        return
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


HUNG = 124  # run_tests' exit code for tests that did not finish in ROW_TIMEOUT seconds
ROW_TIMEOUT = 300  # a row's tests take 10-120 s; a planted bug that loops forever must not stop the script


def run_tests(copy: Path, tests: list[str]) -> tuple[int, list[str], str]:
    """(pytest's exit code, the failing test ids, the output's tail) for `tests` run in `copy`; HUNG if they ran
    past ROW_TIMEOUT (pytest is killed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}  # conftest's to set
    env.update(PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *tests], cwd=copy,
                           env=env, capture_output=True, text=True, timeout=ROW_TIMEOUT)
    except subprocess.TimeoutExpired:
        return HUNG, [], f"the tests ran past {ROW_TIMEOUT} s and were killed"
    failed = [m[1] for m in re.finditer(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", r.stdout, re.M)]
    return r.returncode, failed, (r.stdout + r.stderr)[-1500:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("only", nargs="*", help="run the mutations whose name contains one of these")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--no-baseline", action="store_true", help="skip running the tests unmutated first")
    args = ap.parse_args()
    rows = [r for r in MUTATIONS if not args.only or any(w.lower() in r[0].lower() for w in args.only)]
    if args.list:
        print("\n".join(f"{r[0]}  [{r[1]}; {' '.join(_tests(r))}]" for r in rows))
        return 0
    problems = check_table(rows)
    if problems:
        print("stale mutations (fix the table):\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if hasattr(os, "nice"):
        os.nice(10)
    with tempfile.TemporaryDirectory(prefix="chargen-mutations-") as tmp:
        copy = Path(tmp) / "repo"
        copy_repo(copy)
        probe = subprocess.run([sys.executable, "-c", "import chargen; print(chargen.__file__)"], cwd=copy,
                               env={**os.environ, "PYTHONPATH": str(copy)}, capture_output=True, text=True)
        if not probe.stdout.strip().startswith(str(copy)):
            print(f"the copy's chargen is not the one imported ({probe.stdout.strip() or probe.stderr[-300:]})",
                  file=sys.stderr)
            return 2
        if not args.no_baseline:
            tests = sorted({t for r in rows for t in _tests(r)})
            start = time.monotonic()
            code, failed, tail = run_tests(copy, tests)
            if code != 0:
                print(f"the tests fail without any planted bug ({failed or code}):\n{tail}", file=sys.stderr)
                return 2
            print(f"unmutated: {len(tests)} test selections pass ({time.monotonic() - start:.0f} s)", flush=True)
        uncaught = 0
        for row in rows:
            name, rel = row[0], row[1]
            original = (copy / rel).read_text(encoding="utf-8")
            mutated = original
            for old, new in _edits(row):
                mutated = mutated.replace(old, new)
            (copy / rel).write_text(mutated, encoding="utf-8")
            start = time.monotonic()
            try:
                code, failed, tail = run_tests(copy, _tests(row))
            finally:
                (copy / rel).write_text(original, encoding="utf-8")
            took = f"({time.monotonic() - start:.0f} s)"
            if code == 1 or code == 2 and failed:  # tests failed, or the bug broke their collection
                print(f"{name} -> caught by {', '.join(failed)} {took}", flush=True)
            elif code == HUNG:  # the bug makes them loop forever: no test passes, CI's time limit stops them
                print(f"{name} -> caught: {' '.join(_tests(row))} never finish (killed after {ROW_TIMEOUT} s)",
                      flush=True)
            else:
                uncaught += 1
                why = "NOT CAUGHT" if code == 0 else f"NOT RUN (pytest exit {code}):\n{tail[-600:]}\n"
                print(f"{name} -> {why} by {' '.join(_tests(row))} {took}", flush=True)
    print(f"{len(rows) - uncaught} of {len(rows)} planted bugs caught")
    return 1 if uncaught else 0


if __name__ == "__main__":
    sys.exit(main())
