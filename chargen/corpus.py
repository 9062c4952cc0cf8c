"""Reading text: the training text (a UTF-8 file, a folder of .txt files, or '-' for standard input) and seeds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from chargen.errors import CorpusError


def read_text(path: str | os.PathLike[str]) -> str:
    """Return the whole text. A folder gives its *.txt files in sorted order, joined by a newline.

    Raises CorpusError (one clear line) for a missing path, an empty folder, invalid UTF-8
    (with the byte offset), binary data, or a text that is empty or only whitespace.
    """
    if str(path) == "-":
        text = _decode(sys.stdin.buffer.read(), "standard input")
        return _check_not_blank(text, "standard input (the pipe gave 0 bytes or only whitespace)")
    check_source(path)
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() == ".txt")
        if not files:
            raise CorpusError(f"{p}: the folder has no .txt files; put the book's text in files ending in .txt")
        text = "\n".join(_read_file(f) for f in files)
    else:
        text = _read_file(p)
    return _check_not_blank(text, str(p))


def check_source(path: str | os.PathLike[str]) -> None:
    """CorpusError unless `path` is "-" or names an existing file or folder (a cheap check, before the slow read)."""
    if str(path) == "-":
        return
    if not os.path.exists(path):
        raise CorpusError(f"{path}: no such file or folder; give the path of a UTF-8 text file or a folder of .txt files")


def read_seed(source: str | os.PathLike[str], label: str = "seed") -> str:
    """A text to continue, from a UTF-8 file or '-' (standard input), exactly as it is.

    A final newline stays: it is part of the text the model continues. An empty seed is allowed
    (generation then starts from a zero state). CorpusError, starting with `label` (e.g. the flag),
    for a missing path, a folder, an unreadable file, invalid UTF-8 or binary data.
    """
    if str(source) == "-":
        return _decode(sys.stdin.buffer.read(), f"{label} (standard input)")
    p = Path(source)
    if p.is_dir():
        raise CorpusError(f"{label} {p}: is a folder; give a UTF-8 text file")
    if not p.exists():
        raise CorpusError(f"{label} {p}: no such file; give the path of a UTF-8 text file")
    return _read_file(p, f"{label} {p}")


def _read_file(p: Path, where: str | None = None) -> str:
    where = where or str(p)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise CorpusError(f"{where}: cannot read it ({e.strerror or e}); check the path and its permissions") from None
    return _decode(data, where)


def _decode(data: bytes, where: str) -> str:
    nul = data.find(b"\x00")
    if nul >= 0:
        raise CorpusError(f"{where}: NUL byte at byte offset {nul}: this looks like a binary file, not text; "
                          "give a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{where}: not valid UTF-8 at byte offset {e.start} (byte 0x{data[e.start]:02x}); "
                          "convert it first, e.g. iconv -f latin1 -t utf-8") from None
    return text[1:] if text.startswith("\ufeff") else text  # drop a byte-order mark


def _check_not_blank(text: str, where: str) -> str:
    if not text:
        raise CorpusError(f"{where}: the text is empty; give a file with the book's text")
    if text.isspace():
        raise CorpusError(f"{where}: the text is only whitespace; give a file with the book's text")
    return text
