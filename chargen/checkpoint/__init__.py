"""The checkpoint folder: versioned, written atomically, loaded without running any code.

    checkpoints/<name>/
        config.json  tokenizer.json  history.jsonl     (copies for people to read)
        last  best                                     (files naming a snapshot: "snapshots/e0003-s000000")
        snapshots/<id>/ config.json tokenizer.json model.safetensors optimizer.safetensors
                        train_state.safetensors progress.json history.jsonl
        train.lock                                     (while a process trains it: chargen/runlock.py)

Format 2 (this one) keeps arrays by name in safetensors files; format 1 (chargen 0.1: weights.npz,
optimizer.npz, train_state.npz by position, `last`/`best` as symlinks) still loads and resumes.
docs/checkpoints.md describes both. The modules, each with one job:

    runs       run folders: names, where one may be created, finding one by name
    pointers   `last` and `best`: what each names, never outside the run
    writing    a snapshot written atomically, the pointers moved, pruning
    snapshot   reading one, every file checked before a model is built (open_snapshot)
    layout     what each array is called and its shape, from the config
    tensors    safetensors files whose header is checked before they are read
    progress   progress.json's checks
    npz        format 1's arrays
    files      the message for a file that cannot be opened

This package's names are the interface the rest of chargen uses (`from chargen import checkpoint as ckpt`).
"""

from chargen.checkpoint.layout import optimizer_names, state_layout, weight_layout, weight_names, weight_shapes
from chargen.checkpoint.npz import read_npz as _load_npz  # noqa: F401 (tests read format-1 arrays with it)
from chargen.checkpoint.pointers import POINTERS, pointed_snapshot, pointer_text, read_pointer, snapshot_dir
from chargen.checkpoint.runs import (DEFAULT_ROOT, MAX_NAME, WHICH, check_name, check_snapshots_folder, check_which,
                                     check_writable, default_name, list_runs, prepare_run_dir, resolve_run, run_of,
                                     snapshot_id)
from chargen.checkpoint.snapshot import (SNAPSHOT_FILES, TRAINING_FILES, Snapshot, assign_weights, check_weights,
                                         open_snapshot, read_config, read_snapshot)
from chargen.checkpoint.tensors import read_tensors, write_tensors
from chargen.checkpoint.writing import (ARRAY_FILES, FORMAT, VERSION, _prune, book_fingerprint,  # noqa: F401
                                        config_json, fsync_path, history_jsonl, snapshot_arrays, write_atomic,
                                        write_snapshot)

__all__ = ["ARRAY_FILES", "DEFAULT_ROOT", "FORMAT", "MAX_NAME", "POINTERS", "SNAPSHOT_FILES", "Snapshot",
           "TRAINING_FILES", "VERSION", "WHICH", "assign_weights", "book_fingerprint", "check_name",
           "check_snapshots_folder", "check_weights", "check_which", "check_writable", "config_json", "default_name",
           "fsync_path", "history_jsonl", "list_runs", "open_snapshot", "optimizer_names", "pointed_snapshot",
           "pointer_text", "prepare_run_dir", "read_config", "read_pointer", "read_snapshot", "read_tensors",
           "resolve_run", "run_of", "snapshot_arrays", "snapshot_dir", "snapshot_id", "state_layout", "weight_layout",
           "weight_names", "weight_shapes", "write_atomic", "write_snapshot", "write_tensors"]
