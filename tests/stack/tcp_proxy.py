"""A TCP forwarder that can take its port down and up again: a network outage
between a client and a real server, on one loopback port.

    proxy = TcpProxy(("127.0.0.1", collector_port))   # down: nothing listens yet
    proxy.up()       # connections to proxy.port reach the server, byte for byte
    proxy.down()     # open connections are reset, new ones refused (ECONNREFUSED)
    proxy.stop()

Bytes pass through untouched, so any protocol works (gRPC over h2c included).
While down the port is closed, exactly what a client sees when a Collector is
not running; nothing else binds it in between (free_port() hands a port out
once per run, below the kernel's ephemeral range).
"""
from __future__ import annotations

import selectors
import socket
import struct
import threading

from .proc import LOOPBACK, free_port


class TcpProxy:
    def __init__(self, target: tuple[str, int], port: int | None = None):
        self.target = target
        self.port = port or free_port()
        self.endpoint = f"{LOOPBACK}:{self.port}"
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._pairs: set = set()          # (client socket, server socket) of open connections
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._calls: list = []            # functions for the pump thread to run
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._thread = threading.Thread(target=self._pump, name=f"tcp-proxy-{self.port}", daemon=True)
        self._thread.start()

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def up(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((LOOPBACK, self.port))
            s.listen(64)
            s.setblocking(False)
            self._listener = s
        self._call(lambda: self._sel.register(s, selectors.EVENT_READ, ("accept", None)))

    def down(self) -> None:
        """Close the port and reset every open connection."""
        done = threading.Event()

        def close_all():
            with self._lock:
                listener, self._listener = self._listener, None
                pairs, self._pairs = self._pairs, set()
            if listener is not None:
                self._sel.unregister(listener)
                listener.close()
            for pair in pairs:
                self._close_pair(pair, reset=True)
            done.set()
        self._call(close_all)
        done.wait(5)

    def stop(self) -> None:
        self.down()
        self._stopping = True
        self._wake_w.send(b"x")
        self._thread.join(5)
        self._wake_w.close()

    # -- the pump thread ------------------------------------------------------------
    def _call(self, fn) -> None:
        """Run fn on the pump thread (the selector is not thread-safe)."""
        with self._lock:
            self._calls.append(fn)
        self._wake_w.send(b"x")

    def _pump(self) -> None:
        while not self._stopping:
            for key, _ in self._sel.select(1.0):
                kind, pair = key.data
                if kind == "wake":
                    key.fileobj.recv(4096)
                    with self._lock:
                        calls, self._calls = self._calls, []
                    for fn in calls:
                        fn()
                elif kind == "accept":
                    self._accept(key.fileobj)
                else:
                    self._forward(key.fileobj, pair)
        for pair in list(self._pairs):
            self._close_pair(pair, reset=True)
        self._sel.close()
        self._wake_r.close()

    def _accept(self, listener: socket.socket) -> None:
        try:
            client, _ = listener.accept()
        except (BlockingIOError, OSError):
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        for s in (client, server):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = (client, server)
        with self._lock:
            self._pairs.add(pair)
        self._sel.register(client, selectors.EVENT_READ, ("data", pair))
        self._sel.register(server, selectors.EVENT_READ, ("data", pair))

    def _forward(self, src: socket.socket, pair: tuple) -> None:
        dst = pair[1] if src is pair[0] else pair[0]
        try:
            data = src.recv(65536)
            if data:
                dst.setblocking(True)   # loopback: the other side reads as fast as we write
                dst.sendall(data)
                dst.setblocking(False)
                return
        except OSError:
            pass
        with self._lock:
            self._pairs.discard(pair)
        self._close_pair(pair, reset=False)

    def _close_pair(self, pair: tuple, reset: bool) -> None:
        for s in pair:
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
            if reset:   # SO_LINGER 0: the peer sees a reset, as when a host goes away
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            s.close()
