"""A real `chargen serve` process for tests: started on a free port, ready when /v1/model answers."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx

from conftest import ROOT

START_S = 120  # TensorFlow's import and the model's load, on a busy 2-core machine


class Server:
    def __init__(self, *flags, env: dict | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chargen", "serve", "--port", "0", *map(str, flags)],
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait_for_url()
        self.client = httpx.Client(base_url=self.url, timeout=30)
        deadline = time.monotonic() + START_S
        while True:
            try:
                if self.client.get("/v1/model").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and self.proc.poll() is None, self.stderr
            time.sleep(0.1)
        host, port = re.match(r"http://([\d.]+):(\d+)/", self.url).groups()
        self.address = (host, int(port))

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            found = re.search(r"on (http://\S+/)", line)
            if found:
                return found.group(1)
        self.proc.kill()
        raise AssertionError(f"no 'serving ... on http://...' line; stderr: {''.join(self.stderr)}")

    def stats(self) -> dict:
        return self.client.get("/v1/model").json()["stats"]

    def wait_for(self, check, timeout: float = 10.0) -> dict:
        """Poll /v1/model's stats until check(stats) holds; returns them (AssertionError after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if check(stats):
                return stats
            assert time.monotonic() < deadline, stats
            time.sleep(0.02)

    def raw(self, request: bytes, read_until: bytes | None = None, timeout: float = 30.0) -> tuple[socket.socket, bytes]:
        """Send bytes as they are (no client normalises the path); read until `read_until` or the end."""
        sock = socket.create_connection(self.address, timeout=timeout)
        sock.sendall(request)
        got = b""
        while read_until is None or read_until not in got:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return sock, got

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.client.close()


def post(body: dict | bytes) -> bytes:
    """A raw HTTP/1.1 POST /v1/generate with a JSON body (bytes are sent as they are)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (b"POST /v1/generate HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)


def events(lines) -> list[dict]:
    """The JSON objects of a server-sent event stream's `data:` lines."""
    return [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
