"""What a power cut could leave behind, replayed from the file-system calls a real process made.

Python cannot see whether data reached the disk: a file read back after write() comes from the
page cache whether or not it was ever fsynced. So the writer runs in a real subprocess under
`strace`, which records every system call that changes files (opens for writing, writes,
fsync, rename, mkdir, symlink, unlink; the bytes of small writes), and this module replays them on a model of the
file system that keeps, for every folder, the entries a crash could leave, as POSIX promises
them (the rules the checkpoint code is written against):
- a file's data survives a crash only if fsync (or fdatasync) on it finished after its last
  write or truncation; until then it may be empty or partial;
- a folder's entries (a created, renamed or removed name) survive only if fsync on that folder
  finished after the change; until then each pending name may show its old or its new target.
After every call the checker takes each name that must never be half-written (`last` and `best`,
the run folder's copies) in every combination of old and new entries along its path, and
reports the first call after which one of them could name a missing, incomplete or unsynced file.
`last` and `best` are pointer files (chargen/checkpoint/pointers.py; symlinks in runs written by
chargen 0.1): a pointer is published like any file, so its own data must be synced before the
rename that publishes it, and the model keeps the bytes written to small files to know what
each pointer names in every world.
A crash "between any two calls" thus covers a crash after a truncating open and before the
data, between two files, between a rename and the fsync that makes it last, and so on.

Only paths under `scope` are modelled; what existed there before the traced run counts as on
disk. strace's -y annotations give each file descriptor's path at the time of the call.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SYSCALLS = ("open,openat,creat,write,pwrite64,writev,pwritev,pwritev2,ftruncate,truncate,fsync,fdatasync,sync,"
            "syncfs,rename,renameat,renameat2,mkdir,mkdirat,symlink,symlinkat,unlink,unlinkat,rmdir,link,linkat")
STRING_BYTES = 256  # a write longer than this is logged cut short: its file's bytes are then unknown
SMALL_FILE = 4096  # files that exist before the trace: the bytes of those up to this size are read
_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<name>\w+)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+)(?P<retpath><[^>]*>)?")
_UNFINISHED = re.compile(r"^(?P<pid>\d+)\s+(?P<name>\w+)\((?P<args>.*) <unfinished \.\.\.>$")
_RESUMED = re.compile(r"^(?P<pid>\d+)\s+<\.\.\. (?P<name>\w+) resumed>(?P<args>.*)\)\s+=\s+(?P<ret>-?\d+)(?P<retpath><[^>]*>)?")


def strace_usable() -> str | None:
    """None if strace can trace a child here, else why not (not installed, or ptrace not allowed)."""
    exe = shutil.which("strace")
    if exe is None:
        return "strace is not installed (apt-get install strace; .ci/run installs it)"
    r = subprocess.run([exe, "-f", "-qq", "--seccomp-bpf", "-e", "trace=write", "-o", os.devnull, "true"],
                       capture_output=True, text=True)
    return None if r.returncode == 0 else f"strace cannot trace here ({r.stderr.strip()[:200]})"


def traced(argv: list[str], log: Path, inject: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run argv under strace, writing the calls that change files to `log`; `inject` is an strace -e inject= spec."""
    # --seccomp-bpf stops the tracee only at traced calls (a TensorFlow import makes thousands of
    # others), but strace 6.1 then never fires an injection, so it is left out where one is asked for.
    # -s: the bytes of writes up to STRING_BYTES long are logged (what a pointer file holds); paths always are.
    cmd = ["strace", "-f", "-qq", "-y", "-s", str(STRING_BYTES), "-e", f"trace={SYSCALLS}", "-o", str(log)]
    cmd += ["-e", f"inject={inject}"] if inject else ["--seccomp-bpf"]
    return subprocess.run(cmd + argv, capture_output=True, text=True, **kwargs)


# ---------------------------------------------------------------- the trace

@dataclass
class Call:
    index: int
    pid: int
    name: str
    args: list[str]
    ret: int
    retpath: str | None
    text: str

    def __str__(self) -> str:
        return f"call {self.index}: {self.text}"


def _split_args(args: str) -> list[str]:
    """Top-level comma-separated arguments (strings and <...> annotations kept whole)."""
    out, depth, quote, cur = [], 0, False, []
    i = 0
    while i < len(args):
        ch = args[i]
        if quote:
            cur.append(ch)
            if ch == "\\":
                cur.append(args[i + 1])
                i += 1
            elif ch == '"':
                quote = False
        elif ch == '"':
            quote = True
            cur.append(ch)
        elif ch in "<[{(":
            depth += 1
            cur.append(ch)
        elif ch in ">]})":
            depth -= 1
            cur.append(ch)
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    if cur:
        out.append("".join(cur).strip())
    return out


def _unescape(s: str) -> str:
    return re.sub(r"\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)", lambda m: _escape_char(m.group(1)), s)


def _escape_char(e: str) -> str:
    if e[0] == "x":
        return chr(int(e[1:], 16))
    if e[0].isdigit():
        return chr(int(e, 8))
    return {"n": "\n", "t": "\t", "r": "\r"}.get(e, e)


def parse(log: Path) -> list[Call]:
    """Every traced call (failed ones too: strace's inject counts them) in the order they finished;
    a call interrupted by another thread's is joined with its resumption."""
    calls, pending = [], {}
    for raw in log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _UNFINISHED.match(raw)
        if m:
            pending[(m["pid"], m["name"])] = m["args"]
            continue
        m = _RESUMED.match(raw)
        if m:
            args = pending.pop((m["pid"], m["name"]), "") + m["args"]
        else:
            m = _LINE.match(raw)
            if not m:
                continue  # signals, exits
            args = m["args"]
        retpath = m["retpath"][1:-1] if m["retpath"] else None
        calls.append(Call(len(calls), int(m["pid"]), m["name"], _split_args(args), int(m["ret"]), retpath, raw))
    return calls


def _string(arg: str) -> str:
    if not (arg.startswith('"') and arg.rstrip(".").endswith('"')):
        raise ValueError(f"not a string argument: {arg!r}")
    return _unescape(arg.rstrip(".")[1:-1])


def _fd_path(arg: str) -> str | None:
    """The path strace -y shows for a descriptor: 3</a/b> -> /a/b (None for pipes, sockets, deleted files)."""
    m = re.match(r"^(?:-?\d+|AT_FDCWD)<(.*)>$", arg)
    if not m or not m[1].startswith("/") or m[1].endswith(" (deleted)"):
        return None
    return _unescape(m[1])


def _path(dirfd: str | None, arg: str, cwd: str) -> str:
    p = _string(arg)
    if p.startswith("/"):
        return os.path.normpath(p)
    base = _fd_path(dirfd) if dirfd else cwd
    return os.path.normpath(os.path.join(base or cwd, p))


def renamed_to(call: Call, cwd: str | Path) -> str | None:
    """The destination of a successful rename call, else None."""
    if call.ret < 0 or not call.name.startswith("rename"):
        return None
    return _path(None, call.args[1], str(cwd)) if call.name == "rename" else _path(call.args[2], call.args[3], str(cwd))


# ---------------------------------------------------------------- the file system model

@dataclass(eq=False)
class Node:
    kind: str  # "file", "dir" or "link"
    synced: bool = True  # a file's data is on disk
    target: str = ""  # a link's
    data: bytes | None = None  # a file's bytes, where the trace shows them all (None: unknown)
    entries: dict[str, "Node"] = field(default_factory=dict)  # a folder's names now
    durable: dict[str, "Node"] = field(default_factory=dict)  # the names a crash leaves (for pending ones: old)


def _scan(path: Path) -> Node:
    if path.is_symlink():
        return Node("link", target=os.readlink(path))
    if path.is_dir():
        entries = {child.name: _scan(child) for child in path.iterdir()}
        return Node("dir", entries=entries, durable=dict(entries))
    return Node("file", data=path.read_bytes() if path.stat().st_size <= SMALL_FILE else None)


class Violation(AssertionError):
    pass


class PowerLossModel:
    """Replays calls under `scope`; `check()` after each says whether a crash there could break a promise."""

    def __init__(self, scope: Path, cwd: Path):
        self.scope, self.cwd = os.path.normpath(scope), str(cwd)
        self.root = _scan(Path(self.scope))

    # -- paths
    def _parts(self, path: str) -> list[str] | None:
        rel = os.path.relpath(path, self.scope)
        if rel == ".":
            return []
        if rel.startswith(".."):
            return None  # outside the modelled tree
        return rel.split(os.sep)

    def _parent(self, path: str, call: Call) -> tuple[Node, str] | None:
        parts = self._parts(path)
        if not parts:
            return None
        node = self.root
        for name in parts[:-1]:
            node = node.entries.get(name)
            if node is None or node.kind != "dir":
                raise ValueError(f"{call}: the model has no folder {name!r} on the way to {path}")
        return node, parts[-1]

    def _node(self, path: str | None) -> Node | None:
        parts = self._parts(path) if path else None
        if parts is None:
            return None
        node = self.root
        for name in parts:
            node = node.entries.get(name) if node and node.kind == "dir" else None
        return node

    # -- replaying
    def apply(self, call: Call) -> None:
        if call.ret < 0:
            return  # failed: changed nothing
        n, a = call.name, call.args
        if n in ("open", "openat", "creat"):
            flags = "O_WRONLY|O_CREAT|O_TRUNC" if n == "creat" else (a[1] if n == "open" else a[2])
            if not any(f in flags for f in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC")):
                return  # read-only: changes nothing
            path = call.retpath if call.retpath and call.retpath.startswith("/") else \
                _path(a[0] if n == "openat" else None, a[1] if n == "openat" else a[0], self.cwd)
            where = self._parent(path, call)
            if where is None:
                return
            parent, name = where
            node = parent.entries.get(name)
            if node is None:
                parent.entries[name] = Node("file", synced=False, data=b"")
            elif node.kind == "file":  # truncated: empty; else written somewhere we do not follow
                node.synced, node.data = ("O_TRUNC" not in flags and node.synced), (b"" if "O_TRUNC" in flags else None)
        elif n in ("write", "pwrite64", "writev", "pwritev", "pwritev2", "ftruncate"):
            node = self._node(_fd_path(a[0]))
            if node is not None and node.kind == "file":
                node.synced = False
                # a plain write of a whole logged string appends it (files are written front to back here)
                whole = n == "write" and a[1].endswith('"') and call.ret == int(a[2])
                node.data = node.data + _string(a[1]).encode("latin-1") if whole and node.data is not None else None
        elif n == "truncate":
            node = self._node(_path(None, a[0], self.cwd))
            if node is not None:
                node.synced = False
        elif n in ("fsync", "fdatasync"):
            node = self._node(_fd_path(a[0]))
            if node is None:
                return
            if node.kind == "file":
                node.synced = True
            elif node.kind == "dir":
                node.durable = dict(node.entries)
        elif n in ("sync", "syncfs"):
            self._sync_all(self.root)
        elif n in ("mkdir", "mkdirat", "symlink", "symlinkat"):
            if n == "mkdir":
                path = _path(None, a[0], self.cwd)
            elif n == "mkdirat":
                path = _path(a[0], a[1], self.cwd)
            else:
                path = _path(a[1] if n == "symlinkat" else None, a[-1], self.cwd)
            where = self._parent(path, call)
            if where is not None:
                new = Node("dir") if n.startswith("mkdir") else Node("link", target=_string(a[0]))
                where[0].entries[where[1]] = new
        elif n in ("rename", "renameat", "renameat2"):
            src = _path(None, a[0], self.cwd) if n == "rename" else _path(a[0], a[1], self.cwd)
            dst = _path(None, a[1], self.cwd) if n == "rename" else _path(a[2], a[3], self.cwd)
            s, d = self._parent(src, call), self._parent(dst, call)
            node = s[0].entries.pop(s[1]) if s else Node("file", synced=False)  # from outside: unknown
            if d is not None:
                d[0].entries[d[1]] = node
        elif n in ("unlink", "unlinkat", "rmdir"):
            path = _path(a[0], a[1], self.cwd) if n == "unlinkat" else _path(None, a[0], self.cwd)
            where = self._parent(path, call)
            if where is not None:
                where[0].entries.pop(where[1], None)
        elif n in ("link", "linkat"):
            paths = [_path(None, a[0], self.cwd), _path(None, a[1], self.cwd)] if n == "link" else \
                [_path(a[0], a[1], self.cwd), _path(a[2], a[3], self.cwd)]
            if any(self._parts(p) is not None for p in paths):
                raise ValueError(f"{call}: hard links are not modelled")

    def _sync_all(self, node: Node) -> None:
        node.synced = True
        if node.kind == "dir":
            node.durable = dict(node.entries)
            for child in node.entries.values():
                self._sync_all(child)

    # -- what a crash could leave
    def _could_be(self, folder: Node, name: str) -> list[Node | None]:
        """What `name` in `folder` could be after a crash: its entry now or its durable one."""
        now, kept = folder.entries.get(name), folder.durable.get(name)
        return [now] if now is kept else [now, kept]

    def worlds(self, path: str | Path, choices: dict | None = None, follow: bool = True) -> list[tuple[Node | None, dict]]:
        """(node or None, the world) for every crash world along `path`, following links (the
        last component's only if `follow`). A world is one choice, old or new, per pending
        entry met on the way; `choices` fixes some, so a second path can be walked in the same world."""
        parts = self._parts(os.path.normpath(path))
        if parts is None:
            raise ValueError(f"{path} is outside {self.scope}")
        found: list = []
        self._walk(self.root, self.scope, parts, dict(choices or {}), follow, found, 0)
        return found

    def _walk(self, node, at, rest, choices, follow, found, hops) -> None:
        if node is None or not rest:
            found.append((node, choices))
            return
        if node.kind != "dir":
            found.append((None, choices))
            return
        key = (id(node), rest[0])
        for child in [choices[key]] if key in choices else self._could_be(node, rest[0]):
            world = {**choices, key: child}
            if child is not None and child.kind == "link" and (follow or len(rest) > 1) and hops < 8:
                parts = self._parts(os.path.normpath(os.path.join(at, child.target)))
                if parts is None:
                    found.append((None, world))
                else:
                    self._walk(self.root, self.scope, parts + rest[1:], world, follow, found, hops + 1)
            else:
                self._walk(child, os.path.join(at, rest[0]), rest[1:], world, follow, found, hops)


def check_snapshot_pointer(model: PowerLossModel, pointer: Path, files: list[str], call: Call) -> None:
    """In every crash world where `pointer` exists, it is a file with synced data (or an old symlink), and
    the folder it names holds `files`, each with synced data."""
    for node, world in model.worlds(pointer, follow=False):
        if node is None:
            continue  # no pointer in this world: nothing is named, so nothing half-written is
        if node.kind == "link":
            folder, named = pointer, node.target  # walked through the link
        elif node.kind == "file" and node.synced and node.data is not None:
            named = node.data.decode("utf-8").strip()
            folder = pointer.parent / named
        else:
            what = "a folder" if node.kind == "dir" else "with its data not synced" if not node.synced else \
                "with bytes the trace does not show"
            raise Violation(f"after {call}\na crash could leave {pointer.name} (a pointer file) {what}")
        for name in files:
            for target, _ in model.worlds(folder / name, world):
                if target is None or target.kind != "file" or not target.synced:
                    what = "missing" if target is None else ("not synced" if target.kind == "file" else target.kind)
                    raise Violation(f"after {call}\na crash could leave {pointer.name} -> {named} with {name} {what}")


def check_file(model: PowerLossModel, path: Path, call: Call) -> None:
    """In every crash world where `path` exists, it is a file with synced data."""
    for node, _ in model.worlds(path):
        if node is not None and (node.kind != "file" or not node.synced):
            what = "not synced" if node.kind == "file" else f"a {node.kind}"
            raise Violation(f"after {call}\na crash could leave {path.name} {what}")
