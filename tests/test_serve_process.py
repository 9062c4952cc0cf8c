"""`chargen serve` as a process: stop signals end open streams cleanly and exit 0; bad starts are one line, exit 2."""

import json
import signal
import socket
import subprocess
import sys

import pytest

from serving import Server, post
from test_cli import chargen as run_cli


def _read_all(sock) -> bytes:
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_open_streams_cleanly_and_exits_0(trained_run, sig):
    server = Server("--checkpoint", trained_run.run_dir, "--max-length", 1_000_000)
    sock, first = server.raw(post({"seed": "the ", "length": 1_000_000, "stream": True}), read_until=b'data: {"text"')
    server.proc.send_signal(sig)
    rest = first + _read_all(sock)  # the server closes the stream with its closing event, then the connection
    sock.close()
    assert server.stop(timeout=60) == 0, server.stderr
    assert rest.endswith(b"\r\n0\r\n\r\n")  # the chunked body's proper end, not a cut connection
    last = [line for line in rest.split(b"\n") if line.startswith(b"data: ")][-1]
    assert json.loads(last[6:])["finish_reason"] == "shutdown"
    assert "Traceback" not in "".join(server.stderr)
    with pytest.raises(ConnectionRefusedError):  # nothing listens any more
        socket.create_connection(server.address, timeout=5)


def test_a_busy_port_is_one_line_and_exit_2(trained_run):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        r = run_cli("serve", "--checkpoint", trained_run.run_dir, "--port", holder.getsockname()[1])
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--port" in r.stderr and "choose another" in r.stderr


@pytest.mark.parametrize("flags, needle", [
    (["--max-length", "0"], "--max-length must be a positive integer"),
    (["--port", "70000"], "--port must be an integer in [0, 65535]"),
    (["--block-rows", "-2"], "--block-rows must be a positive integer"),
    (["--host", "no such host.invalid"], "--host"),
    (["--precision", "int4"], "--precision"),
])
def test_bad_flags_are_one_line_and_exit_2(trained_run, flags, needle):
    r = run_cli("serve", "--checkpoint", trained_run.run_dir, *flags)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr


def test_without_the_serve_extra_it_names_the_install_command(tmp_path):
    (tmp_path / "starlette.py").write_text("raise ImportError('hidden for a test', name='starlette')\n")
    from conftest import ROOT

    r = subprocess.run([sys.executable, "-m", "chargen", "serve"], capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "pip install 'chargen[serve]'" in r.stderr and "starlette" in r.stderr
