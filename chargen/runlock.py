"""One trainer per run: an OS lock on RUN/train.lock, held from before anything is written until the run ends.

The lock is `flock` on an open file, so the kernel drops it when the process ends in any way
(kill -9 included): there is never a stale lock to clean up by hand. The holder writes its PID,
host and start time into the file, so a refused process can say who holds the run. The file is
removed when the holder releases it; whoever locks it checks afterwards that the path still names
the file it locked (it may have been removed in between) and tries again if not.

Readers (sample, eval, history, export) take no lock: they read `last`, which always names a
complete snapshot. Where `fcntl` does not exist (Windows) runs are not locked (docs/runs.md).
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
from pathlib import Path
from typing import Any

from chargen.errors import CheckpointError, RunLockedError

try:
    import fcntl
except ImportError:  # Windows: no flock; training works, unlocked
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "train.lock"
_ATTEMPTS = 20  # re-opens after finding the file removed by a holder that was just finishing


class RunLock:
    """`with RunLock(run_dir):` train the run; a second holder is refused at once with RunLockedError.

    Creates the run folder if needed. If the run ends with nothing but the lock file written, the
    folders this lock created are removed again, so a refused or failed start leaves no trace.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None
        self._created: list[Path] = []

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        missing = []
        p = self.run_dir
        while not os.path.lexists(p) and p != p.parent:
            missing.append(p)
            p = p.parent
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"{self.run_dir}: cannot create the run folder ({e.strerror or e}); "
                                  "choose another --root or free space") from None
        self._created = missing  # innermost first: the order to remove them in
        try:
            self._fd = self._lock() if fcntl is not None else None
        except BaseException:
            self._remove_created()
            raise

    def _lock(self) -> int:
        for _ in range(_ATTEMPTS):
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)  # again: a holder that wrote nothing removes it
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise CheckpointError(f"{self.path}: cannot create the run's lock file ({e.strerror or e}); "
                                      "choose another --root or free space") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read_holder(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunLockedError(_refusal(self.run_dir, holder)) from None
                raise CheckpointError(f"{self.path}: cannot lock it ({e.strerror or e}); the file system may not "
                                      "support locks: choose another --root") from None
            if _same_file(fd, self.path):
                _write_holder(fd)
                return fd
            os.close(fd)  # the previous holder removed the file after we opened it: lock the new one
        raise RunLockedError(f"{self.run_dir}: other processes keep starting and stopping training of this run; "
                             "wait for them, then try again")

    def release(self) -> None:
        if self._fd is not None:
            try:
                if _same_file(self._fd, self.path):
                    self.path.unlink()  # while still holding it: see the module docstring
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None
        self._remove_created()

    def _remove_created(self) -> None:
        for d in self._created:  # only folders that hold nothing: a run that wrote files keeps them
            try:
                d.rmdir()
            except OSError:
                break
        self._created = []


def refuse_if_locked(run_dir: Path) -> None:
    """RunLockedError if a process holds `run_dir`'s lock now; creates nothing. A cheap early check (the CLI
    makes it before TensorFlow loads); the lock itself is taken by RunLock, which checks again."""
    if fcntl is None:
        return
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDWR)
    except OSError:
        return  # no lock file: nobody holds it (a holder creates it before anything else)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunLockedError(_refusal(Path(run_dir), _read_holder(fd))) from None
    finally:
        os.close(fd)  # closing drops the lock if we got it


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _write_holder(fd: int) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    data = (json.dumps(info) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
    except (OSError, ValueError):
        return None  # the holder has not written it yet
    return info if isinstance(info, dict) else None


def _refusal(run_dir: Path, info: dict[str, Any] | None) -> str:
    if not info or not isinstance(info.get("pid"), int):
        who, stop = "another process", "stop it"
    else:
        pid, host = info["pid"], info.get("host")
        here = host == socket.gethostname()
        who = f"process {pid}" + ("" if here or not host else f" on {host}") + \
              (f" (started {info['started']})" if info.get("started") else "")
        stop = f"stop it (kill -INT {pid} saves and stops it)" if here else "stop it"
    return f"{run_dir} is being trained by {who}; wait for it to finish or {stop}, then try again"
