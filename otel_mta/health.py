"""HTTP health endpoints for Kubernetes probes: /healthz (the process serves)
and /readyz (every enabled listener is bound and the exporter is configured);
beside them /status, the live view `otel-mta top` reads (otel_mta/status.py), and /lookup,
the read-only queue-id (or Haraka transaction uuid) -> trace-id lookup behind
`otel-mta trace-id` (otel_mta/lookup.py)."""
from __future__ import annotations

from aiohttp import web

from otel_mta import status


class HealthServer:
    def __init__(self, host: str, port: int, app):
        self.host, self.port = host, port
        self._app = app
        self._runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        webapp = web.Application()
        webapp.router.add_get("/healthz", self._healthz)
        webapp.router.add_get("/readyz", self._readyz)
        board = getattr(self._app, "status", None)
        if board is not None:
            status.add_routes(webapp, board)
        webapp.router.add_get("/lookup", self._lookup)
        self._runner = web.AppRunner(webapp, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request) -> web.Response:
        ready, detail = self._app.readiness()
        return web.json_response({"ready": ready, **detail}, status=200 if ready else 503)

    async def _lookup(self, request) -> web.Response:
        """GET /lookup?queue_id=ID: the trace id of a ZoneMTA queue id or a
        Haraka transaction uuid the sidecar's correlation index knows (404
        when it does not), and whether it comes from the message's Message-ID
        ("traced_by": "message_id") or from that id, the message having none
        ("id"). Answers with the trace id only, never the Message-ID or any
        other message data."""
        queue_id = request.query.get("queue_id", "").strip()
        if not queue_id or len(queue_id) > MAX_QUEUE_ID:
            return web.json_response(
                {"error": f"give one queue id of 1 to {MAX_QUEUE_ID} characters: /lookup?queue_id=ID"}, status=400)
        found = self._app.trace_id_for_queue_id(queue_id)
        if found is None:
            return web.json_response({"queue_id": queue_id, "known": False}, status=404)
        trace_id, by_message_id = found
        return web.json_response({"queue_id": queue_id, "known": True, "trace_id": trace_id.hex(),
                                  "traced_by": "message_id" if by_message_id else "id"})


MAX_QUEUE_ID = 256   # ZoneMTA's are 18 hex digits, Haraka's 38 characters; anything much longer is not one
