"""`ibstream serve --from-bus nats://HOST:4222`: an edge server, the very same app as a
source's (routes, limits, batching, resume, schema) over a hub fed from the bus instead of
IB. It waits up to `ib_connect_timeout` for the bus, then serves anyway (`/health`
degraded, the bus tried again in the background), as a source does without IB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from ibstream.bus.edge import BusSource, EdgeBus
from ibstream.bus.edge_hub import EdgeHub
from ibstream.errors import CloseCode
from ibstream.server.connections import Connections
from ibstream.server.run import ServerHandle, _serve, listening_socket, serve_until_signal
from ibstream.server.settings import ServerSettings

log = logging.getLogger(__name__)


def reconnect_everyone(connections: Connections) -> None:
    """The source restarted: every stream gets `complete` (server_shutdown) and its
    connection closes, so clients reconnect and meet the new `server_id`."""
    for conn in list(connections.live):
        conn.finish(CloseCode.GOING_AWAY, "server_shutdown")


async def start_edge_server(
    settings: ServerSettings, *, sock: socket.socket | None = None
) -> ServerHandle:
    """Follow the bus at `settings.from_bus` and serve clients from it."""
    if not settings.from_bus:
        raise ValueError("an edge server needs settings.from_bus (a nats:// URL)")
    sock = listening_socket(settings, sock)
    source = BusSource(settings.from_bus, lease=settings.bus_lease, catch_up=settings.bus_catch_up)
    hub = EdgeHub(source, ring_size=settings.ring_size, grace=settings.channel_grace_seconds)
    try:
        await source.start(hub)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(source.linked.wait(), settings.ib_connect_timeout)
        handle = await _serve(hub, settings, sock, source, True, None, EdgeBus(source))  # type: ignore[arg-type]
    except BaseException:
        sock.close()
        await source.stop()
        raise
    source.on_restart = lambda old, new: reconnect_everyone(handle.context.connections)
    log.info("ibstream edge server on %s (bus %s)", handle.url, settings.from_bus)
    return handle


async def run_edge_forever(settings: ServerSettings) -> None:
    """The CLI's `serve --from-bus`: run until SIGINT/SIGTERM, then stop gracefully."""
    await serve_until_signal(lambda: start_edge_server(settings))
