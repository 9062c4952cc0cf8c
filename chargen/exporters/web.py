"""`chargen export --format web`: a static folder that generates text inside a web page, with no server.

    OUT/  index.html           the page: seed, length, temperature, top-k, top-p, generate (plain HTML, no build step)
          chargen.js           the engine: one step function per cell, a generic loop over layers, sampling
          page.js              the page's glue: loads the model, reads the controls, streams text into the page
          weights.bin          every array, float32 little-endian, one after another
          chargen_export.json  the manifest: each array's name, shape and byte offset; layers; the vocabulary
          tokenizer.json       the checkpoint's, byte for byte

The arrays are Keras's own (get_weights(): embedding, per layer kernel, recurrent_kernel and bias in
the cell's gate order, then the dense layer), named as chargen.net.layout names them, so the
manifest reads like the model; each layer entry names its cell, whose step chargen.js's CELLS holds
(a new cell adds an entry there). The page, chargen.js and page.js are package data (chargen/web/),
copied as they are: nothing in them depends on the model.

Before the folder is put in place (chargen/exporters/folder.py: it is written under a temporary
name), the arrays are read back through the manifest as chargen.js reads them, and must be exactly
the checkpoint's. (That the JavaScript computes what chargen's numpy engine computes is checked in a
real browser by tests/test_web_browser.py.)
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from chargen import checkpoint as ckpt
from chargen.config import ModelConfig
from chargen.errors import ExportError
from chargen.net import get_cell
from chargen.net.layout import weight_layout
from chargen.exporters.manifest import MANIFEST

WEIGHTS_FILE = "weights.bin"
PAGE_FILES = ("index.html", "chargen.js", "page.js")
USAGE = ("open index.html from any static file server (python -m http.server -d THIS_FOLDER), or open it as a file "
         "and choose chargen_export.json and weights.bin when it asks; chargen.js's Model/Generator run it in any page")


def layout(cfg: ModelConfig) -> tuple[list[str], list[dict[str, Any]]]:
    """The names of get_weights()'s arrays in its order (chargen.net.layout), and the manifest's layer
    entries: each layer's cell (its key in chargen.js's CELLS), units and its arrays by role."""
    names = [name for name, _ in weight_layout(cfg)]
    cell = get_cell(cfg.cell)
    if cell.js_step is None:
        raise ExportError(f"the web engine (chargen.js) has no step for the {cell.name} cell; export it as "
                          "--format savedmodel or tflite")
    layers = [{"cell": cell.js_step, "units": u, "weights": {role: f"{cell.name}_{i}/{role}" for role in cell.weights}}
              for i, u in enumerate(cfg.units)]
    return names, layers


def write(folder: Path, snap: ckpt.Snapshot, manifest: dict[str, Any], manifest_name: str = MANIFEST) -> None:
    """Write the page, weights.bin and the manifest (`manifest` plus the web entries) into `folder`, then check them."""
    folder.chmod(0o755)  # not the temporary folder's 0700: a web server running as another user must read it
    names, layers = layout(snap.model)
    tensors, size = _write_weights(folder / WEIGHTS_FILE, dict(zip(names, snap.weights)))
    page = resources.files("chargen") / "web"
    for name in PAGE_FILES:
        with resources.as_file(page / name) as source:
            shutil.copyfile(source, folder / name)
    doc = {
        **manifest,
        "weights_file": WEIGHTS_FILE, "weights_bytes": size, "dtype": "float32", "byte_order": "little",
        "tensors": tensors,
        "embedding": names[0], "layers": layers, "output": {"kernel": names[-2], "bias": names[-1]},
        # BPE: chargen.js merges a word's characters by these ranks, as Hugging Face's BPE model does.
        **({"merges": json.loads(snap.tokenizer.to_str())["model"]["merges"]} if snap.tokenizer.kind == "bpe" else {}),
        "usage": USAGE,
    }
    (folder / manifest_name).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    _check(folder, manifest_name, snap.weights)


def _write_weights(path: Path, arrays: dict[str, np.ndarray]) -> tuple[dict[str, dict[str, Any]], int]:
    """Write the arrays one after another as float32 little-endian: their shapes and byte offsets by name, and the size."""
    tensors, offset = {}, 0
    with open(path, "wb") as f:
        for name, array in arrays.items():
            data = np.ascontiguousarray(array, dtype="<f4")
            f.write(data.tobytes())
            tensors[name] = {"shape": list(data.shape), "offset": offset}
            offset += data.nbytes
    return tensors, offset


def read_arrays(folder: str | Path, manifest_name: str = MANIFEST) -> list[np.ndarray]:
    """A web export's arrays in get_weights() order, found through its manifest as chargen.js finds them."""
    folder = Path(folder)
    doc = json.loads((folder / manifest_name).read_text(encoding="utf-8"))
    data = (folder / doc["weights_file"]).read_bytes()
    if len(data) != doc["weights_bytes"]:
        raise ExportError(f"{folder / doc['weights_file']}: {len(data)} bytes, the manifest says {doc['weights_bytes']}; "
                          "export again")

    def array(name: str) -> np.ndarray:
        t = doc["tensors"][name]
        count = int(np.prod(t["shape"], dtype=np.int64))
        if t["offset"] % 4 or t["offset"] + 4 * count > len(data):
            raise ExportError(f"{folder / manifest_name}: {name} lies outside {doc['weights_file']}; export again")
        return np.frombuffer(data, "<f4", count, t["offset"]).reshape(t["shape"])

    return ([array(doc["embedding"])]
            + [array(name) for layer in doc["layers"] for name in layer["weights"].values()]  # written in get_weights() order
            + [array(doc["output"]["kernel"]), array(doc["output"]["bias"])])


def _check(folder: Path, manifest_name: str, weights: list[np.ndarray]) -> None:
    got = read_arrays(folder, manifest_name)
    if len(got) != len(weights) or not all(np.array_equal(g, np.asarray(w, np.float32)) for g, w in zip(got, weights)):
        raise RuntimeError(f"{folder}: the web export's arrays read back differ from the checkpoint's; this is a bug")
