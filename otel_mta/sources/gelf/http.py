"""GELF over HTTP, as Graylog's GELF HTTP input: `POST /gelf` with one GELF
message as the body, plain or compressed (gzip or zlib, recognised by magic
bytes whatever Content-Encoding says: pygelf labels zlib data 'gzip,deflate').
Answers 202 Accepted, 400 for a refused message, 413 for an oversized body, and
503 with Retry-After while the export queue is congested (nothing is read)."""
from __future__ import annotations

from aiohttp import web


class HttpListener:
    def __init__(self, host: str, port: int, handle_http, max_size: int, congested=lambda: False,
                 pushed_back=lambda: None):
        self.host, self.port = host, port
        self.handle_http = handle_http   # (body, peer) -> reason or None
        self.max_size = max_size
        self.congested = congested       # () -> bool: the export queue has no room left
        self.pushed_back = pushed_back   # () -> None: counts a 503
        self._runner = None

    async def start(self) -> None:
        app = web.Application(client_max_size=self.max_size)
        app.router.add_post("/gelf", self._post)
        app.router.add_post("/", self._post)
        # compressed bodies are inflated by our bounded decoder, never by aiohttp
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, auto_decompress=False,
                                     shutdown_timeout=2.0)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError:
            await self.stop()
            raise
        if self.port == 0:
            self.port = self._runner.addresses[0][1]

    async def _post(self, request: web.Request) -> web.Response:
        if self.congested():
            self.pushed_back()   # GELF HTTP clients rarely retry: likely a lost message, so counted
            return web.Response(status=503, headers={"Retry-After": "2"}, text="export queue full, retry later\n")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.handle_http(None, request.remote)
            return web.Response(status=413, text="too_large\n")
        reason = self.handle_http(body, request.remote)
        if reason is None:
            return web.Response(status=202)
        return web.Response(status=413 if reason == "too_large" else 400, text=reason + "\n")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
