"""The outage proxy the monitoring pipeline run puts between a sidecar and
the Collector (tests/stack/tcp_proxy.py)."""
from __future__ import annotations

import socket
import socketserver
import threading

import pytest

from tests.stack.proc import LOOPBACK
from tests.stack.tcp_proxy import TcpProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo():
    server = socketserver.ThreadingTCPServer((LOOPBACK, 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address
    server.shutdown()
    server.server_close()


def _roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection((LOOPBACK, port), timeout=5) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            got += s.recv(65536)
        return got


def test_down_refuses_and_resets_up_forwards_again(echo):
    proxy = TcpProxy(echo)
    try:
        with pytest.raises(ConnectionRefusedError):     # starts down: nothing listens
            socket.create_connection((LOOPBACK, proxy.port), timeout=5)
        proxy.up()
        payload = bytes(range(256)) * 1000
        assert _roundtrip(proxy.port, payload) == payload
        held = socket.create_connection((LOOPBACK, proxy.port), timeout=5)
        held.sendall(b"x")
        assert held.recv(1) == b"x"
        proxy.down()
        with pytest.raises(ConnectionResetError):        # the open connection was reset
            held.recv(1)
        held.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((LOOPBACK, proxy.port), timeout=5)
        proxy.up()                                       # the same port again
        assert _roundtrip(proxy.port, b"again") == b"again"
    finally:
        proxy.stop()
