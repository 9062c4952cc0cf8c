"""`chargen serve` over real HTTP on 127.0.0.1: one server process for the module, tiny model."""

import json
import socket
import threading

import numpy as np
import pytest

import chargen
from serving import Server, events, post
from test_serve_engine import Engine, _job

BLOCK_ROWS, MAX_CONCURRENT, MAX_SESSIONS, MAX_BODY = 4, 4, 3, 4000
LONG = 1_000_000  # characters: a stream that would outlast any test


@pytest.fixture(scope="module")
def server(trained_run):
    s = Server("--checkpoint", trained_run.run_dir, "--which", "last", "--block-rows", BLOCK_ROWS,
               "--max-concurrent", MAX_CONCURRENT, "--max-sessions", MAX_SESSIONS, "--max-body", MAX_BODY,
               "--max-length", LONG)
    yield s
    assert s.stop() == 0, s.stderr


@pytest.fixture(scope="module")
def gen(trained_run):
    return chargen.load(trained_run.run_dir, which="last")


def _generate(server, **body):
    r = server.client.post("/v1/generate", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _stream(server, **body):
    with server.client.stream("POST", "/v1/generate", json={**body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return events(r.iter_lines())


def test_model_describes_the_run(server, trained_run):
    m = server.client.get("/v1/model").json()
    assert m["name"] == trained_run.run_dir.name and m["snapshot"].startswith("e0002")
    assert (m["cell"], m["units"], m["layers"], m["tokenizer"]) == ("lstm", [24, 16], 2, "char")
    assert m["vocab_size"] > 10 and 0 < m["val_bpc"] < 10 and m["stats"]["block_rows"] == BLOCK_ROWS
    assert m["limits"] == {"max_length": LONG, "max_concurrent": MAX_CONCURRENT, "max_body": MAX_BODY,
                           "max_sessions": MAX_SESSIONS}


def test_json_and_stream_give_the_engines_text(server, gen):
    body = dict(seed="the ", length=300, temperature=1.0, rng_seed=3)
    answer = _generate(server, **body)
    assert (answer["finish_reason"], answer["characters"], answer["session"]) == ("length", 300, None)
    streamed = _stream(server, **body)
    assert streamed[-1] == {"done": True, "finish_reason": "length", "stop": None, "characters": 300, "session": None}
    assert all(set(e) == {"text"} for e in streamed[:-1]) and len(streamed) > 2
    assert "".join(e["text"] for e in streamed[:-1]) == answer["text"]
    local = _job(seed="the ", length=300, temperature=1.0, rng_seed=3)
    Engine(gen, block_rows=BLOCK_ROWS).run({0: [local]})
    assert answer["text"] == "".join(local.pieces)


def test_a_seeded_request_gives_the_same_text_with_traffic_around_it(server):
    body = dict(seed="row ", length=400, temperature=1.0, top_k=5, rng_seed=11)
    alone = _generate(server, **body)["text"]
    rng = np.random.default_rng(0)
    others = [dict(seed=str(rng.choice(["", "the ", "each row "])), length=int(rng.integers(50, 600)),
                   temperature=float(rng.choice([0.0, 0.7, 1.2]))) for _ in range(9)]
    errors = []

    def traffic(bodies):
        try:
            for b in bodies:
                _stream(server, **b)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=traffic, args=(others[i::3],)) for i in range(3)]
    for t in threads:
        t.start()
    during = _stream(server, **body)
    for t in threads:
        t.join(120)
    assert not errors
    assert "".join(e["text"] for e in during[:-1]) == alone


def test_stop_strings_end_the_text_as_chargen_sample_does(server):
    full = _generate(server, seed="the ", length=300, temperature=1.0, rng_seed=8)["text"]
    stop = full[50:52]
    cut = _generate(server, seed="the ", length=300, temperature=1.0, rng_seed=8, stop=[stop, "zzzz"])
    assert cut["text"] == full[:full.index(stop) + 2] and (cut["finish_reason"], cut["stop"]) == ("stop", stop)


def test_a_session_continues_where_the_text_stopped_and_old_ones_are_dropped(server):
    whole = _generate(server, seed="the ", length=200, temperature=1.0, rng_seed=21)["text"]
    first = _generate(server, seed="the ", length=120, temperature=1.0, rng_seed=21, session=True)
    second = _generate(server, length=80, temperature=1.0, session=first["session"])
    assert first["text"] + second["text"] == whole
    again = _generate(server, length=80, temperature=1.0, session=first["session"])  # a branch from the same point
    assert again["text"] == second["text"] and again["session"] not in (first["session"], second["session"])
    for _ in range(MAX_SESSIONS):  # the oldest of MAX_SESSIONS + 1 is dropped
        _generate(server, length=5, session=True)
    gone = server.client.post("/v1/generate", json={"session": first["session"], "length": 5})
    assert gone.status_code == 404 and gone.json()["field"] == "session" and first["session"] in gone.json()["error"]


@pytest.mark.parametrize("body, status, field, needle", [
    (b'{"seed": "the ', 400, None, "not valid JSON"),
    (b"[1, 2]", 400, None, "must be a JSON object"),
    (b"\xff\xfe", 400, None, "not valid JSON"),
    ({"seed": "a", "lenght": 5}, 422, "lenght", "unknown field 'lenght'"),
    ({"length": "5"}, 422, "length", 'length must be an integer, got "5"'),
    ({"length": 5.0}, 422, "length", "length must be an integer"),
    ({"temperature": True}, 422, "temperature", "temperature must be a number, got true"),
    ({"stop": "x"}, 422, "stop", "stop must be a list of strings"),
    ({"stop": [""]}, 422, "stop", "stop must hold strings of 1 to"),
    ({"stream": "yes"}, 422, "stream", "stream must be true or false"),
    ({"top_p": 0}, 422, "top_p", "top_p must be in (0, 1]"),
    ({"top_k": -1}, 422, "top_k", "top_k must be an integer >= 0"),
    ({"temperature": -0.5}, 422, "temperature", "temperature must be >= 0"),
    ({"length": LONG + 1}, 422, "length", f"length must be at most {LONG}"),
    ({"rng_seed": -3}, 422, "rng_seed", "rng_seed must be an integer >= 0"),
    ({"seed": "the \u2603 state"}, 422, "seed", "never saw: '\u2603'"),
    ({"session": "../../etc"}, 422, "session", "session must be true or an id"),
    ({"unknown": "ignore"}, 422, "unknown", 'unknown must be "error" or "skip"'),
])
def test_bad_input_is_refused_with_json_naming_the_field(server, body, status, field, needle):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = server.client.post("/v1/generate", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and needle in r.json()["error"], r.json()


def test_unknown_seed_characters_can_be_skipped(server):
    r = _generate(server, seed="the \u2603", unknown="skip", length=20, rng_seed=1)
    assert r["text"] == _generate(server, seed="the ", length=20, rng_seed=1)["text"]


def test_a_body_over_the_limit_is_413_whether_declared_or_streamed(server):
    r = server.client.post("/v1/generate", json={"seed": "a" * MAX_BODY})
    assert r.status_code == 413 and "--max-body" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is counted as the body arrives
        for _ in range(10):
            yield b" " * (MAX_BODY // 4)

    r = server.client.post("/v1/generate", content=chunks())
    assert r.status_code == 413


def test_beyond_max_concurrent_is_503_and_a_client_that_leaves_frees_its_row_at_once(server):
    held = []
    for _ in range(MAX_CONCURRENT):
        sock, got = server.raw(post({"seed": "the ", "length": LONG, "stream": True}), read_until=b'data: {"text"')
        assert b"200 OK" in got
        held.append(sock)
    server.wait_for(lambda s: s["active_rows"] == MAX_CONCURRENT)
    busy = server.client.post("/v1/generate", json={"length": 5})
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "--max-concurrent" in busy.json()["error"]
    held.pop().close()  # one client leaves mid-stream: its row is freed within a few steps, not after LONG chars
    stats = server.wait_for(lambda s: s["active_rows"] == MAX_CONCURRENT - 1, timeout=3)
    assert stats["in_progress"] == MAX_CONCURRENT - 1
    assert _generate(server, length=5)["characters"] == 5  # there is room again
    for sock in held:
        sock.close()
    server.wait_for(lambda s: s["active_rows"] == 0 and s["in_progress"] == 0, timeout=3)


def test_a_client_that_leaves_a_json_request_frees_its_row_too(server):
    sock = socket.create_connection(server.address)
    sock.sendall(post({"length": LONG}))
    server.wait_for(lambda s: s["active_rows"] == 1)
    sock.close()
    server.wait_for(lambda s: s["active_rows"] == 0 and s["in_progress"] == 0, timeout=3)


def test_the_playground_page_and_nothing_outside_its_folder(server):
    page = server.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element in ('id="seed"', 'id="length"', 'id="temperature"', 'id="top-k"', 'id="top-p"', 'id="generate"',
                    'id="output"'):
        assert element in page.text
    assert server.client.get("/playground.js").status_code == 200
    for path in (b"/../pyproject.toml", b"/../../chargen/cli.py", b"/%2e%2e/pyproject.toml", b"/..%2fpyproject.toml",
                 b"/%2e%2e%2f%2e%2e%2fchargen%2fcli.py", b"/static/..%2F..%2Fserve%2Fapp.py", b"/....//pyproject.toml",
                 b"/%252e%252e/pyproject.toml", b"//etc/passwd", b"/..\\pyproject.toml", b"/app.py", b"/__init__.py"):
        sock, got = server.raw(b"GET " + path + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        sock.close()
        status = got.split(b" ", 2)[1]
        assert status in (b"404", b"400"), (path, got[:200])
        assert b"[build-system]" not in got and b"import" not in got and b"root:" not in got


def test_an_int8_server_serves_the_int8_engines_text(trained_run, tmp_path, monkeypatch):
    """`--precision int8`: the LiteRT engine steps the rows (and primes the seeds), and a seeded text is the one
    the same engine gives without HTTP, in blocks of the same size."""
    monkeypatch.setenv("CHARGEN_CACHE", str(tmp_path))  # the server converts and caches; the local engine reads it
    s = Server("--checkpoint", trained_run.run_dir, "--which", "last", "--block-rows", BLOCK_ROWS,
               "--precision", "int8", env={"CHARGEN_CACHE": str(tmp_path)})
    try:
        m = s.client.get("/v1/model").json()
        assert (m["precision"], m["engine"]) == ("int8", "Int8Engine")
        body = dict(seed="the ", length=200, temperature=1.0, rng_seed=3)
        answer = _generate(s, **body)
        streamed = _stream(s, **body)
        local = _job(**body)
        Engine(chargen.load(trained_run.run_dir, which="last", precision="int8"), block_rows=BLOCK_ROWS).run({0: [local]})
        assert answer["text"] == "".join(e["text"] for e in streamed[:-1]) == "".join(local.pieces)
        assert len(answer["text"]) == 200
    finally:
        assert s.stop() == 0, s.stderr
