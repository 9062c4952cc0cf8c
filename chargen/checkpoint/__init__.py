"""The checkpoint folder: versioned, written atomically, loaded without running any code.

    checkpoints/<name>/
        config.json  tokenizer.json  history.jsonl     (copies for people to read)
        last -> snapshots/e0003-s000000                (relative symlinks, swapped atomically)
        best -> snapshots/e0002-s000000
        snapshots/<id>/ config.json tokenizer.json weights.npz optimizer.npz
                        train_state.npz progress.json history.jsonl
        train.lock                                     (while a process trains it: chargen/runlock.py)

The modules: `runs` (run folders: names, finding one), `pointers` (what `last` and `best`
name), `writing` (a snapshot written atomically, pruning), `snapshot` (reading one, checked
before anything is built from it), `npz` (format 1's arrays). This package's names are the
interface the rest of chargen uses (`from chargen import checkpoint as ckpt`).
"""

from chargen.checkpoint.npz import read_npz as _load_npz  # noqa: F401 (tests read format-1 arrays with it)
from chargen.checkpoint.pointers import snapshot_dir
from chargen.checkpoint.runs import (DEFAULT_ROOT, MAX_NAME, WHICH, check_name, check_snapshots_folder, check_which,
                                     check_writable, default_name, list_runs, prepare_run_dir, resolve_run, run_of,
                                     snapshot_id)
from chargen.checkpoint.snapshot import (SNAPSHOT_FILES, Snapshot, assign_weights, check_weights, open_snapshot,
                                         read_config, read_snapshot, weight_shapes)
from chargen.checkpoint.writing import (FORMAT, VERSION, _prune, book_fingerprint, config_json,  # noqa: F401
                                        fsync_path, history_jsonl, write_atomic, write_snapshot)

__all__ = ["DEFAULT_ROOT", "FORMAT", "MAX_NAME", "SNAPSHOT_FILES", "Snapshot", "VERSION", "WHICH", "assign_weights",
           "book_fingerprint", "check_name", "check_snapshots_folder", "check_weights", "check_which",
           "check_writable", "config_json", "default_name", "fsync_path", "history_jsonl", "list_runs",
           "open_snapshot", "prepare_run_dir", "read_config", "read_snapshot", "resolve_run", "run_of",
           "snapshot_dir", "snapshot_id", "weight_shapes", "write_atomic", "write_snapshot"]
