"""Paths from the user, checked before use, and the permissions of what chargen writes.

`check_path` refuses a path the file system cannot hold (a name longer than NAME_MAX bytes, a
whole path longer than PATH_MAX) with a ConfigError saying which option and how long, where the
OS would raise "File name too long" from deep inside a later call.

Folders chargen creates with `tempfile.mkdtemp` (snapshots, exports) start as 0o700 and files
from `mkstemp` as 0o600; `folder_mode()` / `file_mode()` give what a plain mkdir or open would
(0o777 / 0o666 less the process umask), so a server or another user can read a run exactly as
they can read any other file this user creates.
"""

from __future__ import annotations

import os
from pathlib import Path

from chargen.errors import ConfigError

_DEFAULT_NAME_MAX, _DEFAULT_PATH_MAX = 255, 4096


def check_path(path: str | os.PathLike[str], what: str) -> None:
    """ConfigError naming `what` (e.g. "--root") if `path` has a name or a length the file system cannot hold."""
    text = os.fspath(path)
    if "\x00" in text:
        raise ConfigError(f"{what} {_short(text)!r} contains a NUL character; give a path without it")
    base = _existing_ancestor(Path(text))
    name_max = _pathconf(base, "PC_NAME_MAX", _DEFAULT_NAME_MAX)
    for part in Path(text).parts:
        size = len(os.fsencode(part))
        if size > name_max:
            raise ConfigError(f"{what} {_short(text)!r}: the name {_short(part, 24)!r} is {size} bytes long, more than "
                              f"the {name_max} this file system allows; choose a shorter one")
    path_max = _pathconf(base, "PC_PATH_MAX", _DEFAULT_PATH_MAX)
    size = len(os.fsencode(os.path.abspath(text)))
    if size >= path_max:
        raise ConfigError(f"{what} {_short(text)!r} is {size} bytes long as a full path, more than the {path_max - 1} "
                          "this system allows; choose a shorter one")


def _short(text: str, keep: int = 40) -> str:
    return text if len(text) <= keep else text[:keep] + "..."


def _existing_ancestor(p: Path) -> Path:
    p = Path(os.path.abspath(p))
    while p != p.parent:
        try:
            if os.path.isdir(p):
                return p
        except (OSError, ValueError):
            pass
        p = p.parent
    return p


def _pathconf(path: Path, name: str, default: int) -> int:
    try:
        value = os.pathconf(path, name)
    except (OSError, ValueError, AttributeError):  # AttributeError: no os.pathconf (Windows)
        return default
    return value if value and value > 0 else default


# ---------------------------------------------------------------- permissions

def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (/proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (the only portable way to read it)
    os.umask(mask)
    return mask


def folder_mode() -> int:
    """The mode `mkdir` gives a new folder: 0o777 less the umask."""
    return 0o777 & ~current_umask()


def file_mode() -> int:
    """The mode `open` gives a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()
