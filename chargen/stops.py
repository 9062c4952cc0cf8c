"""Stop strings: texts that end a generation, for `chargen sample --stop` and the server alike.

The rule, the same everywhere: generation ends with the token that completes a stop string,
and that token is part of the text (with one character per token the text ends with the stop
string). Keeping it means the text returned is exactly what the model's state has read, so a
session continued on the server goes on from the end of the text its caller saw; a caller who
wants it gone strips the stop string it was told matched.
"""

from __future__ import annotations

from typing import Any, Sequence

from chargen.errors import ConfigError

MAX_STOPS = 16  # stop strings per generation
MAX_STOP_CHARS = 200  # characters per stop string


def check_stops(stop: Any, name: str = "stop") -> tuple[str, ...]:
    """The stop strings as a tuple; ConfigError (naming `name`) unless a list of 1-200 character strings, 16 at most."""
    if stop is None:
        return ()
    if isinstance(stop, str) or not isinstance(stop, (list, tuple)):
        raise ConfigError(f"{name} must be a list of strings, got {stop!r}", arguments=(name,))
    if len(stop) > MAX_STOPS:
        raise ConfigError(f"{name} takes at most {MAX_STOPS} strings, got {len(stop)}", arguments=(name,))
    for s in stop:
        if not isinstance(s, str) or not 1 <= len(s) <= MAX_STOP_CHARS:
            raise ConfigError(f"{name} must hold strings of 1 to {MAX_STOP_CHARS} characters, got {s!r}",
                              arguments=(name,))
    return tuple(stop)


def unescape(text: str) -> str:
    r"""A stop string typed on a command line: \n, \t, \r and \\ become a newline, tab, return and backslash."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "ntr\\":
            out.append({"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


class StopStrings:
    """Watches the pieces of one generated text; `hit(piece)` says which stop string that piece completed."""

    def __init__(self, stops: Sequence[str] = ()):
        self.stops = check_stops(list(stops), "stop")
        self._keep = max((len(s) for s in self.stops), default=1) - 1  # characters before a piece a match can start in
        self._tail = ""

    def hit(self, piece: str) -> str | None:
        """The stop string that ends within `piece` (the one ending first), or None."""
        if not self.stops:
            return None
        text = self._tail + piece
        found = [(text.find(s) + len(s), s) for s in self.stops if s in text]
        self._tail = text[-self._keep:] if self._keep else ""
        return min(found)[1] if found else None
