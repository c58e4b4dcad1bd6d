"""Benchmark server process for the bus bench: a plain server, a source or an edge.

    python -m bench.edge_serve plain  IB_PORT CLIENT_ID MAX_CONNECTIONS
    python -m bench.edge_serve source IB_PORT CLIENT_ID MAX_CONNECTIONS NATS_URL
    python -m bench.edge_serve edge   NATS_URL MAX_CONNECTIONS

Streams are released at once when their last client leaves (`channel_grace_seconds` 0), so
an idle role takes no CPU from the one being measured. Prints `{"port": P}` once it serves (IB connected, or the bus followed), `{"failed": ...}`
otherwise, and stops gracefully when stdin closes. Each role in its own process, so its CPU
is its own and no two share an event loop.
"""

from __future__ import annotations

import asyncio
import sys

from bench.serve import answer
from ibstream.bus.serve import start_edge_server
from ibstream.server.run import ServerHandle, start_server
from ibstream.server.settings import ServerSettings


async def start(role: str, args: list[str]) -> tuple[ServerHandle, bool]:
    if role == "edge":
        settings = ServerSettings(
            port=0,
            from_bus=args[0],
            max_connections_per_ip=int(args[1]),
            channel_grace_seconds=0,
            log_level="error",
        )
        handle = await start_edge_server(settings)
        return handle, handle.source.connected
    settings = ServerSettings(
        port=0,
        ib_port=int(args[0]),
        client_id=int(args[1]),
        max_connections_per_ip=int(args[2]),
        bus=args[3] if role == "source" else None,
        channel_grace_seconds=0,
        log_level="error",
    )
    handle = await start_server(settings)
    return handle, handle.source.connected


async def main(role: str, args: list[str]) -> None:
    handle, ready = await start(role, args)
    await answer(handle, ready, f"{role} not connected")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
