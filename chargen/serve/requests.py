"""The body of POST /v1/generate, checked field by field before any work is queued.

Every refusal is a RequestError carrying the HTTP status and the field it is about: 400 for a
body that is not a JSON object, 413 for one over --max-body, 422 for an unknown field, a wrong
type, a value out of range or a seed character the model never saw. Ranges are the library's
own (SampleConfig.validate, chargen.stops.check_stops), whose messages name the fields as
they are named here (top_k).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from chargen.config import SampleConfig
from chargen.errors import ChargenError, ConfigError
from chargen.stops import check_stops
from chargen.tokenizer import known_text

SESSION_ID_CHARS = 32  # hex digits of a session id (secrets.token_hex(16))

# field -> (JSON types allowed, what to call them in an error); bools are never numbers here
TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "seed": ((str,), "a string"),
    "length": ((int,), "an integer"),
    "temperature": ((int, float), "a number"),
    "top_k": ((int,), "an integer"),
    "top_p": ((int, float), "a number"),
    "rng_seed": ((int, type(None)), "an integer or null"),
    "stop": ((list, type(None)), "a list of strings"),
    "stream": ((bool,), "true or false"),
    "session": ((str, bool, type(None)), "true (start a session) or a session id"),
    "unknown": ((str,), '"error" or "skip"'),
}


class RequestError(ChargenError):
    """A request the server refuses: `status`, the `field` at fault (None for the body as a whole), a message."""

    def __init__(self, status: int, field: str | None, message: str):
        super().__init__(message)
        self.status, self.field, self.message = status, field, message

    def to_json(self) -> dict[str, Any]:
        return {"error": self.message, "field": self.field}


@dataclass(frozen=True)
class GenerateRequest:
    """A checked request. `session` is the id to continue from; `keep` asks for the end state to be saved."""

    seed: str = ""
    sample: SampleConfig = SampleConfig()
    stop: tuple[str, ...] = ()
    stream: bool = False
    session: str | None = None
    keep: bool = False


def parse_request(body: bytes, tokenizer, max_length: int) -> GenerateRequest:
    """A GenerateRequest from the raw body; RequestError naming the field otherwise."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise RequestError(400, None, f"the body is not valid JSON ({e}); send a JSON object such as "
                                      '{"seed": "The ", "length": 200}') from None
    if not isinstance(data, dict):
        raise RequestError(400, None, f"the body must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(TYPES))
    if unknown:
        raise RequestError(422, unknown[0], f"unknown field{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; "
                                            f"the fields are {', '.join(TYPES)}")
    for name, value in data.items():
        allowed, said = TYPES[name]
        if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
            raise RequestError(422, name, f"{name} must be {said}, got {json.dumps(value)}")
    sample = {f.name: data[f.name] for f in fields(SampleConfig) if data.get(f.name) is not None}
    sample.setdefault("length", min(SampleConfig().length, max_length))
    try:
        cfg = SampleConfig(**sample).validate()
    except ConfigError as e:
        raise _named(e, list(sample)) from None
    try:
        stop = check_stops(data.get("stop"), "stop")
    except ConfigError as e:
        raise RequestError(422, "stop", str(e)) from None
    if cfg.length > max_length:
        raise RequestError(422, "length", f"length must be at most {max_length} (this server's --max-length), "
                                          f"got {cfg.length}")
    seed = data.get("seed", "")
    unknown_policy = data.get("unknown", "error")
    if unknown_policy not in ("error", "skip"):
        raise RequestError(422, "unknown", f'unknown must be "error" or "skip", got {json.dumps(unknown_policy)}')
    try:
        seed = known_text(tokenizer, seed, unknown_policy, "seed")[0]
    except ChargenError as e:
        raise RequestError(422, "seed", str(e).replace("--unknown skip", '"unknown": "skip"')) from None
    session = data.get("session")
    if isinstance(session, str) and not (len(session) == SESSION_ID_CHARS and all(c in "0123456789abcdef" for c in session)):
        raise RequestError(422, "session", f"session must be true or an id this server returned, got {json.dumps(session)}")
    return GenerateRequest(seed, cfg, stop, bool(data.get("stream", False)),
                           session if isinstance(session, str) else None, session is not None and session is not False)


def _named(error: ConfigError, names: list[str]) -> RequestError:
    """The library's "top_k must be ..." with the field it is about (the library names arguments as fields are)."""
    field = next((name for name in names if name in error.arguments), None)
    return RequestError(422, field, str(error))
