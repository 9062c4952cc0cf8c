"""The HTTP API (Starlette): POST /v1/generate, GET /v1/model, and the playground page at /.

Answers are JSON; with "stream": true the text comes as server-sent events instead, each
`data: {"text": "..."}` holding what was generated since the last one (pieces are coalesced,
at most one event per --flush-ms per client, the first character at once), then a closing
`data: {"done": true, "finish_reason": ..., "stop": ..., "characters": ..., "session": ...}`.
Errors are JSON {"error": message, "field": name or null}. The playground is a static folder
served by Starlette's StaticFiles, which refuses any path that resolves outside it.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from chargen.serve.jobs import Job
from chargen.serve.requests import RequestError, parse_request
from chargen.serve.service import Service

STATIC = Path(__file__).resolve().parent / "static"
RETRY_AFTER_S = 1


def create_app(service: Service) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        import asyncio

        service.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            service.close()
            await anyio.to_thread.run_sync(service.join)

    app = Starlette(routes=[
        Route("/v1/generate", generate, methods=["POST"]),
        Route("/v1/model", model, methods=["GET"]),
        Mount("/", StaticFiles(directory=STATIC, html=True), name="playground"),
    ], lifespan=lifespan)
    app.state.service = service
    return app


async def model(request: Request) -> Response:
    return JSONResponse(request.app.state.service.model_info())


async def generate(request: Request) -> Response:
    service: Service = request.app.state.service
    try:
        body = await _read_body(request, service.cfg.max_body)
        job = service.begin(parse_request(body, service.tokenizer, service.cfg.max_length))
    except RequestError as e:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if e.status == 503 else None
        return JSONResponse(e.to_json(), status_code=e.status, headers=headers)
    if job.request.stream:
        return EventStream(job, service)
    try:
        await _until_done(job, request.receive)
    finally:
        service.end(job)
    return JSONResponse({"text": "".join(job.pieces), **job.result()})


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    too_big = RequestError(413, None, f"the request body is over {limit} bytes (this server's --max-body); send a "
                                      "shorter seed")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    return bytes(body)


async def _watch_disconnect(receive: Receive, job: Job, scope: anyio.CancelScope) -> None:
    """Cancel `job` (its row is freed before the next step) and stop waiting the moment the client leaves."""
    while (await receive())["type"] != "http.disconnect":
        pass
    job.cancel()
    scope.cancel()


async def _until_done(job: Job, receive: Receive) -> None:
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_watch_disconnect, receive, job, tasks.cancel_scope)
        while not job.done:
            await job.event.wait()
            job.event.clear()
        tasks.cancel_scope.cancel()


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode("utf-8") + b"\n\n"


class EventStream:
    """An ASGI response that sends a job's text as server-sent events while it is generated."""

    def __init__(self, job: Job, service: Service):
        self.job, self.service = job, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        job = self.job
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]})
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_watch_disconnect, receive, job, tasks.cancel_scope)
                sent = 0
                while True:
                    done = job.done  # read before the pieces: all of them were appended before it was set
                    count = len(job.pieces)
                    if count > sent:
                        await send({"type": "http.response.body", "more_body": True,
                                    "body": _event({"text": "".join(job.pieces[sent:count])})})
                        sent = count
                    if done:
                        break
                    await job.event.wait()
                    job.event.clear()
                await send({"type": "http.response.body", "body": _event({"done": True, **job.result()}),
                            "more_body": False})
                tasks.cancel_scope.cancel()
        finally:
            self.service.end(job)
