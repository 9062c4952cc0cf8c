"""Format 1 (chargen 0.1): lists of arrays in .npz files, read without trusting the file.

`np.load(allow_pickle=False)` refuses pickled objects, but a damaged file can still claim an
array of terabytes in its header (numpy allocates it before reading), hold members that are not
arrays (np.load hands those back as bytes), or be a plain .npy instead of an archive. `read_npz`
reads the zip itself: each member must be `aNNNN.npy` (numbered from 0, stored uncompressed as
np.savez writes them) holding a numeric array whose header matches the bytes the member has;
the zip's CRC is checked on every byte. Anything else is a CheckpointError naming the file.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import numpy.lib.format as npy

from chargen.checkpoint.files import unreadable
from chargen.errors import CheckpointError

NUMERIC_KINDS = "biuf"  # bool, int, unsigned, float: never objects, strings, structured or complex values


def read_npz(path: Path, required: bool = True) -> list[np.ndarray] | None:
    """The arrays of `path` in order; None if it is missing and not `required`; CheckpointError if damaged."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = sorted(zf.infolist(), key=lambda i: i.filename)
            expected = [f"a{i:04d}.npy" for i in range(len(infos))]
            if [i.filename for i in infos] != expected:
                raise ValueError(f"members {[i.filename for i in infos][:5]} are not a0000.npy, a0001.npy, ...")
            return [_member(zf, info) for info in infos]
    except (FileNotFoundError, IsADirectoryError) as e:
        if isinstance(e, FileNotFoundError) and not required:
            return None
        raise unreadable(path, e) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, NotImplementedError,
            OverflowError, MemoryError, RuntimeError) as e:
        raise CheckpointError(f"{path}: truncated or corrupted ({type(e).__name__}: {e}); use another snapshot "
                              "or retrain") from None


def _member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{info.filename} is compressed; chargen writes arrays uncompressed")
    if info.file_size > os.path.getsize(zf.filename):  # a damaged header can claim any size
        raise ValueError(f"{info.filename} claims {info.file_size} bytes, more than the whole file")
    data = zf.read(info)  # checks the CRC
    f = io.BytesIO(data)
    version = npy.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"{info.filename}: .npy format version {version} is not one numpy's savez writes")
    read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    if dtype.hasobject or dtype.kind not in NUMERIC_KINDS or dtype.fields is not None:
        raise ValueError(f"{info.filename} holds {dtype} values, not numbers")
    size = math.prod(shape) * dtype.itemsize
    if size != len(data) - f.tell():
        raise ValueError(f"{info.filename}: its header describes {size} bytes of data, but it holds {len(data) - f.tell()}")
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=f.tell())
    return array.reshape(shape, order="F" if fortran else "C").copy()
