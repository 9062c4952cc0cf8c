"""Named arrays in safetensors files: written with fsync, read without trusting the file.

safetensors (Hugging Face's format, read by every framework) is an 8-byte little-endian header
length, a JSON header giving each array's dtype, shape and byte range, then the bytes: plain
numbers, so loading one runs no code. The `safetensors` package writes the file and reads the
data; before it does, the header is checked here against what the checkpoint must hold, so a
file that lies is a CheckpointError naming the file before any model is built:
- a header length that is huge (over MAX_HEADER) or runs past the end of the file;
- a header that is not a JSON object of arrays, or names one array twice;
- byte ranges that overlap, leave a gap, run past the end, or do not match dtype x shape;
- a dtype, a shape or a set of names other than the caller expects (`expect`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from chargen.checkpoint.files import unreadable
from chargen.errors import CheckpointError

MAX_HEADER = 1 << 24  # bytes; a chargen header is a few kB (safetensors itself allows 100 MB)
# safetensors dtype names numpy can hold (little-endian, as the format stores them)
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
# name -> (dtype, shape) the file must hold; a dtype of None takes any integer dtype (RNG states)
Expect = Mapping[str, tuple["np.dtype | None", tuple[int, ...]]]


class _Damaged(ValueError):
    """What is wrong with a file's header; read_tensors turns it into a CheckpointError naming the file."""


def write_tensors(path: Path, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Write named arrays as safetensors with `metadata` (strings) in its header, then fsync.

    save_file writes straight to the file (a third of the time of building the bytes first, at 2x512);
    the fsync then goes through a descriptor of our own. save_file can create the file 0600 whatever the
    umask, so it is given the mode any new file gets (a server or another user reads runs).
    """
    from safetensors.numpy import save_file

    from chargen.paths import file_mode

    # np.asarray(order="C"), not np.ascontiguousarray: that makes a 0-d array (the optimizer's iteration) 1-d
    save_file({name: np.asarray(a, order="C") for name, a in arrays.items()}, path, metadata=dict(metadata))
    os.chmod(path, file_mode())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_tensors(path: Path, expect: Expect | None = None, required: bool = True) -> dict[str, np.ndarray] | None:
    """The arrays of a safetensors file by name; None if it is missing and not `required`.

    With `expect`, the file must hold exactly those names, each with that dtype and shape.
    """
    try:
        with open(path, "rb") as f:  # only the header is read here: safetensors maps the data itself
            size = os.fstat(f.fileno()).st_size
            start = f.read(8)
            length = int.from_bytes(start, "little") if len(start) == 8 else 0
            text = f.read(min(length, MAX_HEADER + 1))
    except OSError as e:
        if isinstance(e, FileNotFoundError) and not required:
            return None
        raise unreadable(path, e) from None
    try:
        header = parse_header(start, text, size)
        if expect is not None:
            check_expected(header, expect)
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            arrays = load_file(path)
        except (SafetensorError, OSError) as e:  # what the checks above let through, the library's own refuse
            raise _Damaged(f"safetensors refuses it ({e})") from None
    except _Damaged as e:
        raise CheckpointError(f"{path}: {e}; the file is damaged or not chargen's, use another snapshot or "
                              "retrain") from None
    return {name: arrays[name] for name in header}


def parse_header(start: bytes, text: bytes, file_size: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Each array's (dtype, shape), from a file's first 8 bytes (`start`), the header they announce (`text`,
    as read) and the file's size, after checking that the header tells the truth."""
    if len(start) < 8:
        raise _Damaged(f"it has {file_size} bytes, fewer than the 8 of a safetensors header length")
    size = int.from_bytes(start, "little")
    if size > MAX_HEADER:
        raise _Damaged(f"its header length is {size:,} bytes, more than chargen reads ({MAX_HEADER:,})")
    if 8 + size > file_size or len(text) != size:
        raise _Damaged(f"its header length ({size:,} bytes) runs past the end of the file ({file_size:,} bytes)")
    data_size = file_size - 8 - size
    try:
        doc = json.loads(text.decode("utf-8"), object_pairs_hook=_no_repeats)
    except _Damaged:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _Damaged(f"its header is not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise _Damaged(f"its header is a JSON {type(doc).__name__}, not an object")
    meta = doc.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise _Damaged(f"its __metadata__ {str(meta)[:80]} is not an object of strings")
    arrays, spans = {}, []
    for name, entry in doc.items():
        dtype, shape, begin, end = _entry(name, entry)
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise _Damaged(f"{name!r} spans {end - begin} bytes, but {len(shape)}-d {list(shape)} of {dtype} takes "
                           f"{math.prod(shape) * dtype.itemsize}")
        arrays[name] = (dtype, shape)
        spans.append((begin, end, name))
    at = 0
    for begin, end, name in sorted(spans):
        if begin != at:
            what = "overlaps the array before it" if begin < at else f"leaves {begin - at} bytes unused before it"
            raise _Damaged(f"{name!r} (bytes {begin}-{end}) {what}")
        at = end
    if at != data_size:
        raise _Damaged(f"its arrays end at byte {at:,} of the data, but the data has {data_size:,} "
                       "(truncated, or bytes past the arrays)")
    return arrays


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise _Damaged(f"its header names {repeated[0]!r} twice")
    return dict(pairs)


def _entry(name: str, entry: Any) -> tuple[np.dtype, tuple[int, ...], int, int]:
    if not name or not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _Damaged(f"its header entry {name!r} is not an array (dtype, shape, data_offsets)")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPES:
        raise _Damaged(f"{name!r} has dtype {dtype!r}, not one of {', '.join(DTYPES)}")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise _Damaged(f"{name!r} has shape {shape!r}, not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise _Damaged(f"{name!r} has byte range {offsets!r}, not [begin, end] with 0 <= begin <= end")
    return np.dtype(DTYPES[dtype]), tuple(shape), offsets[0], offsets[1]


def check_expected(header: Mapping[str, tuple[np.dtype, tuple[int, ...]]], expect: Expect) -> None:
    """_Damaged unless the header holds exactly the expected names, dtypes and shapes."""
    missing = [n for n in expect if n not in header]
    extra = [n for n in header if n not in expect]
    if missing or extra:
        raise _Damaged(", ".join(filter(None, [
            f"no array named {', '.join(map(repr, missing[:6]))}" if missing else "",
            f"arrays it should not have: {', '.join(map(repr, extra[:6]))}" if extra else ""])))
    for name, (want_dtype, want_shape) in expect.items():
        dtype, shape = header[name]
        if want_dtype is None and dtype.kind not in "iu" or want_dtype is not None and dtype != want_dtype:
            raise _Damaged(f"{name!r} holds {dtype} values where {want_dtype or 'integers'} are expected")
        if shape != tuple(want_shape):
            raise _Damaged(f"{name!r} has shape {list(shape)}, but the model its config.json describes needs "
                           f"{list(want_shape)}: the files do not belong together")
