"""`chargen serve`: a checkpoint over HTTP, every client's row stepped together (docs/serving.md).

    app.py       routes: POST /v1/generate (JSON or server-sent events), GET /v1/model, the playground
    service.py   the loaded model, admission limits, the threads below
    priming.py   reads each request's seed into a state (batch-1 Keras model, own thread)
    batcher.py   continuous batching: all active rows stepped in fixed-size blocks, one character a step
    sessions.py  saved end states that a later request continues from
    requests.py  the request body, checked field by field
    server.py    socket, Uvicorn, signals

Starlette and Uvicorn are the optional extra `serve`; nothing here is imported by `chargen` itself.
"""

from chargen.serve.server import serve

__all__ = ["serve"]
