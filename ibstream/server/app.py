"""The application: wires the hub, the settings and the endpoint modules together.

FastAPI (Starlette underneath) so the HTTP endpoints are published as OpenAPI
(`/openapi.json`, browsable at `/docs`); the WebSocket routes are plain Starlette routes.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from ibstream.server import control, guard, history_http, http_errors, published, status, ws
from ibstream.server.connections import Connections
from ibstream.server.history import HistoryService
from ibstream.server.hub import Hub
from ibstream.server.recording import Recording
from ibstream.server.settings import ServerSettings
from ibstream.server.status import without_nulls

if TYPE_CHECKING:
    from ibstream.bus.source import SourceBus


def package_version() -> str:
    try:
        return importlib.metadata.version("ibstream")
    except importlib.metadata.PackageNotFoundError:
        import ibstream

        return getattr(ibstream, "__version__", "0.0.0")


@dataclass(eq=False)
class ServerContext:
    """What every endpoint needs: the hub, the settings and the open connections."""

    hub: Hub
    settings: ServerSettings
    connections: Connections
    recording: Recording | None = None  # --record: the tick store's recorder
    bus: SourceBus | None = None  # --bus: ticks and events onto NATS JetStream
    version: str = field(default_factory=package_version)
    started: float = field(default_factory=time.monotonic)
    history: HistoryService = field(init=False)

    def __post_init__(self) -> None:
        self.history = HistoryService(self.hub, self.recording)

    def stats(self) -> dict:
        """`/ws/stats` and the control channel's `stats`; nulls omitted, as everywhere."""
        body = {
            "version": self.version,
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            **self.connections.stats(),
            "queue_size": self.settings.queue_size,
            "hub": self.hub.stats(),
        }
        return without_nulls(body)

    async def shutdown(self) -> None:
        """Send `complete` (server_shutdown) on every stream, close the connections, then
        cancel every upstream subscription (idle ones in their grace period too)."""
        await self.connections.shutdown(self.settings.shutdown_timeout)
        self.hub.close()
        if self.recording is not None:
            recording, self.recording = self.recording, None
            await recording.stop()
        if self.bus is not None:  # after the hub closed: its stream_closed events go out
            bus, self.bus = self.bus, None
            await bus.stop()


def with_head(routes: list[BaseRoute]) -> list[BaseRoute]:
    """Each GET route with a HEAD twin (kept out of OpenAPI): FastAPI's routes answer only
    the methods they list, and probes (`curl -I /health`, load balancers) send HEAD."""
    out: list[BaseRoute] = []
    for route in routes:
        out.append(route)
        if isinstance(route, APIRoute) and route.methods == {"GET"}:
            out.append(
                APIRoute(route.path, route.endpoint, methods=["HEAD"], include_in_schema=False)
            )
    return out


def create_app(
    hub: Hub,
    settings: ServerSettings,
    recording: Recording | None = None,
    bus: SourceBus | None = None,
) -> FastAPI:
    ctx = ServerContext(
        hub,
        settings,
        Connections(settings.max_connections_per_ip, settings.max_streams_per_connection),
        recording,
        bus=bus,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await ctx.shutdown()  # no-op when ServerHandle.stop() already did it

    app = FastAPI(
        title="ibstream",
        version=ctx.version,
        summary="Live IB tick-by-tick data as SSE and WebSocket streams",
        description="WebSocket endpoints (`/v2/ws/stream`, `/ws/control`) are not in OpenAPI: "
        "their messages are published as JSON Schema at `GET /v2/schema`.",
        routes=[
            *with_head([*published.routes(ctx), *status.routes(ctx), *history_http.routes(ctx)]),
            *ws.routes(ctx),
            *control.routes(ctx),
        ],
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    http_errors.install(app)
    generate = app.openapi
    app.openapi = lambda: published.errors_as_json(generate())  # type: ignore[method-assign]
    app.add_middleware(guard.Guard, settings=settings)  # token, Origin, CORS
    app.state.ibstream = ctx
    return app
