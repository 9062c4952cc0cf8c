"""Stopping cleanly on Ctrl-C, SIGTERM and SIGHUP.

Schedulers, `docker stop`, `systemd` and Kubernetes send SIGTERM first (then SIGKILL after a
grace period); a closed terminal sends SIGHUP. During training the first of these signals only
sets a flag: the loop finishes its step, saves a resumable snapshot and stops, and the command
line exits 128 + the signal's number (130 for Ctrl-C, 143 for TERM, 129 for HUP). A second
signal stops at once (`StopNow`, a KeyboardInterrupt): `last` still names a complete snapshot.

A signal that is ignored when chargen starts stays ignored: under `nohup` (SIGHUP ignored) a
closed terminal does not stop the run. A handler a program installed itself is left alone too.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopNow(KeyboardInterrupt):
    """A stop signal that cannot wait for the end of the step: the first outside training, or a second one."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_name(signum: int | None) -> str:
    """'SIGTERM' for 15; 'Ctrl-C' for SIGINT, as people know it."""
    return "Ctrl-C" if signum in (None, signal.SIGINT) else signal.Signals(signum).name


def exit_code(signum: int | None) -> int:
    """The shell's convention: 128 + the signal's number (130 for Ctrl-C, and for a stop without a signal)."""
    return 128 + (signal.SIGINT if signum is None else signum)


def stop_now(signum: int, frame: object = None) -> None:
    raise StopNow(signum)


def _ours(handler: object) -> bool:
    """A handler chargen may replace: the default action, Python's Ctrl-C, or one of chargen's own."""
    return handler in (signal.SIG_DFL, signal.default_int_handler, stop_now) or isinstance(handler, _FirstSignal)


class TermAndHupStop:
    """While inside (a command line's run): SIGTERM and SIGHUP raise StopNow as Ctrl-C raises KeyboardInterrupt,
    instead of killing the process; the previous handlers come back on exit (main() may be called in a program)."""

    def __enter__(self) -> "TermAndHupStop":
        self.previous = _install((signal.SIGTERM, signal.SIGHUP), stop_now)
        return self

    def __exit__(self, *exc: object) -> bool:
        _restore(self.previous)
        return False


class _FirstSignal:
    def __init__(self, owner: "StopOnSignal"):
        self.owner = owner

    def __call__(self, signum: int, frame: object) -> None:
        for sig in self.owner.previous:  # a second one stops at once
            signal.signal(sig, stop_now)
        self.owner.on_signal(signum)


class StopOnSignal:
    """While inside: the first stop signal calls `on_signal(signum)`; any second one raises StopNow.

    Only in the main thread (Python delivers signals there); signals that are ignored, or that
    a program handles itself, are left as they are. The previous handlers come back on exit.
    """

    def __init__(self, on_signal: Callable[[int], None]):
        self.on_signal = on_signal
        self.previous: dict[int, object] = {}

    def __enter__(self) -> "StopOnSignal":
        self.previous = _install(STOP_SIGNALS, _FirstSignal(self))
        return self

    def __exit__(self, *exc: object) -> bool:
        _restore(self.previous)
        self.previous = {}
        return False


def _install(signals: tuple[int, ...], handler: object) -> dict[int, object]:
    """Set `handler` for each of `signals` that is ours to take (see _ours), in the main thread only (Python
    delivers signals there); returns the handlers it replaced, for _restore."""
    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            if _ours(signal.getsignal(sig)):
                previous[sig] = signal.signal(sig, handler)
    return previous


def _restore(previous: dict[int, object]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
