"""The Starlette application: wires the hub, the settings and the endpoint modules together."""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette

from ibstream.server import control, sse, ws
from ibstream.server.connections import Connections
from ibstream.server.hub import Hub
from ibstream.server.settings import ServerSettings


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
    version: str = field(default_factory=package_version)
    started: float = field(default_factory=time.monotonic)

    def stats(self) -> dict:
        return {
            "version": self.version,
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            **self.connections.stats(),
            "queue_size": self.settings.queue_size,
            "hub": self.hub.stats(),
        }

    async def shutdown(self) -> None:
        """Send `complete` (server_shutdown) on every stream, close the connections, then
        cancel every upstream subscription (idle ones in their grace period too)."""
        await self.connections.shutdown(self.settings.shutdown_timeout)
        self.hub.close()


def create_app(hub: Hub, settings: ServerSettings) -> Starlette:
    ctx = ServerContext(
        hub,
        settings,
        Connections(settings.max_connections_per_ip, settings.max_streams_per_connection),
    )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await ctx.shutdown()  # no-op when ServerHandle.stop() already did it

    app = Starlette(
        routes=[*sse.routes(ctx), *ws.routes(ctx), *control.routes(ctx)], lifespan=lifespan
    )
    app.state.ibstream = ctx
    return app
