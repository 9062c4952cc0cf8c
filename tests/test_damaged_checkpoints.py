"""Damaged checkpoint files of every kind (issue #11 item 9): each file of a snapshot truncated, with bytes
flipped, replaced by random bytes or by another file, or with one value of the wrong kind, seeded; load,
resume, eval, export and history either work (the damage was harmless) or raise a ChargenError. Anything
else (a traceback at the command line) fails, and so does a resume that takes a damaged history in."""

import json
import random
import shutil
import zlib

import numpy as np

import pytest

import chargen
from chargen import checkpoint as ckpt
from chargen.errors import ChargenError

FILES = ("config.json", "tokenizer.json", "model.safetensors", "optimizer.safetensors", "train_state.safetensors",
         "progress.json", "history.jsonl")
TRAINING_ONLY = ("optimizer.safetensors", "train_state.safetensors")  # read by a resume only
KINDS = ("truncate", "flip", "flip", "random", "swap", "value", "value")
ODD_VALUES = ("abc", float("nan"), float("inf"), -1, 0, 10**30, 2.5, None, True, [], {}, [1, "x"], {"a": None})


def _damage(path, kind, rng):
    """Damage a file: `kind` is one of KINDS ("value": one value of a JSON document or one array of a
    .safetensors file replaced by a well-formed one of the wrong type, size, dtype or shape)."""
    data = path.read_bytes()
    if kind == "value":
        data = _odd_array(path, rng) if path.suffix == ".safetensors" else _odd_json(data, path.suffix == ".jsonl", rng)
    elif kind == "truncate":
        data = data[:rng.randrange(len(data))]
    elif kind == "flip":
        data = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= rng.randint(1, 255)
        data = bytes(data)
    elif kind == "random":
        data = rng.randbytes(len(data))
    else:  # another file of the snapshot in its place
        data = (path.parent / rng.choice([f for f in FILES if f != path.name])).read_bytes()
    path.write_bytes(data)


def _odd_json(data, lines, rng):
    docs = [json.loads(line) for line in data.decode("utf-8").splitlines() if line] if lines else [json.loads(data)]
    doc = rng.choice(docs)
    while True:  # down to a leaf, or stop at a container
        keys = list(doc) if isinstance(doc, dict) else list(range(len(doc))) if isinstance(doc, list) else []
        if not keys:
            break
        key = rng.choice(keys)
        if not isinstance(doc[key], (dict, list)) or rng.random() < 0.3:
            doc[key] = rng.choice(ODD_VALUES)
            break
        doc = doc[key]
    return "".join(json.dumps(d) + "\n" for d in docs).encode() if lines else json.dumps(docs[0]).encode()


def _odd_array(path, rng):
    from safetensors.numpy import save

    arrays = ckpt.read_tensors(path)
    name = rng.choice(sorted(arrays))
    a = arrays[name]
    arrays[name] = rng.choice([a.astype(np.float64), a.astype(np.int32), a.reshape(-1)[:1].reshape(()), a.T.copy(),
                               np.zeros((0,) + a.shape[1:], a.dtype), np.frombuffer(b"text", np.uint8),
                               a.astype(np.float16)])
    return save(arrays)


def _only_chargen_errors(what, call) -> bool:
    """True if `call` worked, False if it raised a ChargenError; anything else fails the test."""
    try:
        call()
    except ChargenError:
        return False
    except Exception as e:  # noqa: BLE001 - the point of the test
        raise AssertionError(f"{what} raised {type(e).__name__}: {e}") from e
    return True


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("case", range(len(KINDS)))
def test_damaged_files_give_only_chargen_errors(trained_run, tmp_path, name, case):
    kind = KINDS[case]
    rng = random.Random(zlib.crc32(f"{name}/{case}".encode()))  # seeded: the same damage every run
    run = tmp_path / "ck" / "book"
    shutil.copytree(trained_run.run_dir, run, symlinks=True)
    snap = ckpt.snapshot_dir(run, "last")
    _damage(snap / name, kind, rng)
    if name == "history.jsonl":
        shutil.copy(snap / name, run / name)  # the run's own copy, which `chargen history` reads
    book = trained_run.run_dir.parent.parent / "book.txt"
    epochs = len(trained_run.history)
    where = f"{name} {kind} (case {case})"
    if name not in TRAINING_ONLY:  # (load, eval and export never open those: their outcome would not change)
        _only_chargen_errors(f"load, {where}", lambda: chargen.load(run, which="last").generate("the ", 5,
                                                                                                temperature=0))
        _only_chargen_errors(f"history, {where}", lambda: chargen.history(run))
        _only_chargen_errors(f"eval, {where}", lambda: chargen.evaluate("the state of each row", run, which="last",
                                                                         compressors=False, progress=False))
        _only_chargen_errors(f"export, {where}", lambda: chargen.export(run, out=tmp_path / "exp", format="tflite",
                                                                        which="last"))
    if _only_chargen_errors(f"resume, {where}", lambda: chargen.train(book, root=tmp_path / "ck", resume=True,
                                                                      epochs=epochs + 1, progress=False)):
        assert [h["epoch"] for h in chargen.history(run)] == list(range(1, epochs + 2))  # an accepted resume
        # wrote a sound history (today's bug: a damaged one was taken in and written on)
