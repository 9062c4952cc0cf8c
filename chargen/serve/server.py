"""`chargen serve`: load a checkpoint, listen, serve until Ctrl-C or SIGTERM, exit 0.

The socket is bound here, before the model loads, so a busy port is one clear error at once
and `--port 0` can print the port it got. Uvicorn runs the app; on the first SIGINT or SIGTERM
it stops accepting connections, and the Service ends every generation in progress (each
stream gets its closing event with finish_reason "shutdown"), so open responses end cleanly
within a step instead of being cut. Uvicorn re-raises a caught signal once it is done, which
would make a clean stop exit 130 or die of SIGTERM; here a served shutdown exits 0.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator

from chargen.config import ServeConfig
from chargen.errors import ConfigError, MissingExtra

GRACE_S = 10  # after a stop signal, the longest open responses get to end before they are cut


def check_installed() -> None:
    """MissingExtra naming the install command unless Starlette and Uvicorn can be imported."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise MissingExtra(f"chargen serve needs the serve extra ({e.name} is not installed): "
                           "pip install 'chargen[serve]' (or pip install -e '.[serve]' in a clone)") from None


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a ConfigError naming --host/--port and the fix."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"--host {host!r} is not an address this machine can listen on ({e.strerror}); "
                          "use 127.0.0.1, 0.0.0.0 or one of its own addresses") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise ConfigError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror}); choose another --port "
                          "(0 picks a free one) or stop what holds it") from None
    sock.set_inheritable(True)
    return sock


def serve(checkpoint: str | None = None, which: str = "best", root: str = "checkpoints",
          config: ServeConfig | None = None, say: Callable[[str], None] | None = None,
          sock: socket.socket | None = None) -> None:
    """Serve a checkpoint over HTTP until SIGINT or SIGTERM (see docs/serving.md).

    `sock` is a socket already bound with bind() (the CLI binds before TensorFlow loads, so a busy
    port is reported at once); by default one is bound to config.host and config.port.
    """
    cfg = (config or ServeConfig()).validate()
    check_installed()
    from chargen import checkpoint as ckpt

    ckpt.check_which(which)
    sock = sock if sock is not None else bind(cfg.host, cfg.port)
    try:
        import uvicorn

        from chargen.generate import load
        from chargen.serve.app import create_app
        from chargen.serve.service import Service, snapshot_info

        generator = load(checkpoint, which=which, root=root, precision=cfg.precision)
        service = Service(generator, cfg, snapshot_info(generator.source, which))
        server = _server(uvicorn.Config(create_app(service), log_level="warning", access_log=False, lifespan="on",
                                        timeout_graceful_shutdown=GRACE_S), on_stop=service.close)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        (say or _say)(f"serving {service.info.get('name', Path(str(generator.source)).name)} "
                      f"({service.info.get('snapshot')}) on http://{shown}:{port}/ ; Ctrl-C stops")
        server.run(sockets=[sock])
    finally:
        sock.close()


def _say(line: str) -> None:
    print(f"chargen: {line}", file=sys.stderr, flush=True)


def _server(config, on_stop: Callable[[], None]):
    """A uvicorn.Server whose stop signals also end the generations in progress, and that exits 0 after them."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            on_stop()
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            """uvicorn's, without raising the caught signal again at the end."""
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            before = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in before.items():
                    signal.signal(sig, handler)

    return Server(config)
