"""chargen_export.json: what every export says about itself, and the step formats' inputs and outputs.

    format, version, model_format        which export this is
    cell, units, embed, vocab_size,      the model's cell (lstm, gru), sizes and kind of vocabulary
    tokenizer
    chars                                token id i is chars[i] (with BPE a piece of text; tokenizer.json holds the same)
    start_token                          what chargen's Generator feeds first when there is no seed text
    source                               the run, snapshot and epoch it came from
"""

from __future__ import annotations

import json
from pathlib import Path

from chargen.checkpoint import Snapshot
from chargen.exporters.step import SIGNATURE, state_names
from chargen.net import get_cell
from chargen.tokenizer import start_token

FORMAT = "chargen-export"
VERSION = 1
MANIFEST = "chargen_export.json"


def manifest_head(snap: Snapshot, run: Path, which: str, format: str) -> dict:
    """What every format's manifest says: the format, the model's sizes, the vocabulary and where it came from."""
    cfg = snap.model
    return {
        "format": FORMAT, "version": VERSION, "model_format": format,
        "cell": cfg.cell, "units": list(cfg.units), "embed": cfg.embed, "vocab_size": cfg.vocab_size,
        "tokenizer": snap.tokenizer.kind,
        "chars": list(snap.tokenizer.tokens),
        "start_token": start_token(snap.tokenizer),
        "source": {"run": run.name, "snapshot": snap.path.name, "which": which, "epoch": snap.progress.get("epoch")},
    }


def step_manifest(head: dict, model_file: str) -> str:
    """The manifest of a single-step export (savedmodel, tflite): `head` plus the signature's inputs and outputs."""
    units, vocab = head["units"], head["vocab_size"]
    names = state_names(get_cell(head["cell"]), len(units))
    tensor = lambda shape, dtype="float32": {"shape": list(shape), "dtype": dtype}  # noqa: E731
    state = {n: tensor((1, u)) for layer_names, u in zip(names, units) for n in layer_names}
    doc = {
        **head,
        "model_file": model_file, "signature": SIGNATURE,
        "inputs": {"token": tensor((1,), "int32"), **state},
        "outputs": {"logits": tensor((1, vocab)), "probs": tensor((1, vocab)), **state},
        "state": names,
        "usage": "start with zero state; feed one token and the state, sample from probs, then pass "
                 "the outputs named in 'state' back in as the inputs of the same names",
    }
    return to_json(doc)


def to_json(doc: dict) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
