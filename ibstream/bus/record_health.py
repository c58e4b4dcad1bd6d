"""`GET /health` of `ibstream record --from-bus`: the recorder has no HTTP server of its own,
so this is a tiny one (Starlette under uvicorn, on the recorder's event loop) for monitors
and operators, shaped like the server's `/health`: 200 `ok`, 503 `degraded` (same body)
while NATS is unreachable (at start-up, or lost and reconnecting), while it has no stream to
read yet (no source ever started: nothing is recorded), or while the tick store cannot be
written. The `bus` section is the source's and the edge's
(`ibstream.bus.link.connection_status`), `store` is the server's recording `ok` / `problem`,
`recorder` is `BusRecorder.status()`.

It starts before the recorder reaches the bus, so a recorder waiting for NATS answers
`degraded` rather than not at all. Port 0 (the default) lets the OS pick a free port; the
one log line at start names the URL.
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ibstream.bus.recorder import BusRecorder
from ibstream.server.app import package_version
from ibstream.server.run import bind_socket, socket_url, start_uvicorn
from ibstream.server.sse import VERSION_HEADER
from ibstream.server.status import without_nulls

log = logging.getLogger(__name__)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 0  # a free port the OS picks


def health_body(recorder: BusRecorder, version: str) -> dict:
    """The recorder's state as it is now (`status`: ok / degraded, and why in the sections)."""
    bus = {**recorder.bus.status(), "consuming": recorder.consuming}
    problem = recorder.store_problem()
    ok = bus["connected"] and recorder.consuming and problem is None
    return without_nulls(
        {
            "status": "ok" if ok else "degraded",
            "role": "recorder",
            "version": version,
            "bus": bus,
            "store": {"uri": recorder.root.uri, "ok": problem is None, "problem": problem},
            "recorder": recorder.status(),
        }
    )


class RecorderHealth:
    """The running `/health` server: `url`; `await stop()` ends it."""

    def __init__(self, server: uvicorn.Server, serving: asyncio.Task[None], url: str):
        self._server = server
        self._serving = serving
        self.url = url

    @classmethod
    async def start(
        cls, recorder: BusRecorder, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
    ) -> RecorderHealth:
        """Listen on `host`:`port` (OSError if it cannot: a busy port) and serve `/health`."""
        version = package_version()

        async def health(request: Request) -> JSONResponse:
            body = health_body(recorder, version)
            code = 200 if body["status"] == "ok" else 503
            return JSONResponse(body, code, headers=VERSION_HEADER)

        app = Starlette(routes=[Route("/health", health, methods=["GET", "HEAD"])])
        sock = bind_socket(host, port)
        server, serving = await start_uvicorn(app, sock, log_level="warning", lifespan="off")
        health_server = cls(server, serving, socket_url(sock) + "/health")
        log.info("recorder health at %s", health_server.url)
        return health_server

    async def stop(self) -> None:
        self._server.should_exit = True
        await self._serving
