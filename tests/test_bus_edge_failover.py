"""An edge process kill -9ed under 20 clients: each reconnects to the other edge with its
positions (`resume_from`) and gets every tick once, none lost, none repeated: the other
edge's rings were filled from the bus whether or not a client held the stream there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import websockets

from ibstream.bus.nats_server import NatsServer
from ibstream.gateway import GatewaySimulator
from ibstream.server.run import ServerHandle
from tests.bus_fixtures import nats_server, stopped_at_end
from tests.client_fixtures import ServerProcess
from tests.conftest import WAIT, WSClient, assert_contiguous
from tests.test_bus_edge import edge_on
from tests.test_bus_edge_source import ES, TYPES, take

__all__ = ["nats_server"]  # a fixture, imported for pytest

CLIENTS = 20


@pytest.fixture
async def edges() -> AsyncIterator[list[ServerHandle]]:
    async with stopped_at_end() as started:
        yield started


async def on(url: str) -> WSClient:
    conn = await websockets.connect(url, open_timeout=WAIT, max_queue=4096, max_size=2**24)
    client = WSClient(conn)
    client.greeting = await client.recv()
    return client


async def until_cut(client: WSClient, positions: dict[str, int], seen: list) -> None:
    """What reached the client before its edge died, checked tick by tick."""
    try:
        await take(client, 10**9, positions, seen)
    except websockets.ConnectionClosed:
        return


async def test_an_edge_killed_under_20_clients_they_resume_on_the_other(
    nats_server: NatsServer, make_server, gateway: GatewaySimulator, edges: list[ServerHandle]
) -> None:
    await make_server(bus=nats_server.url)
    edge_a = ServerProcess(gateway.port)  # an edge as its own process, to kill -9
    try:
        await edge_a.start("--from-bus", nats_server.url, "--max-connections-per-ip", "50")
        edges.append(edge_b := await edge_on(nats_server.url, max_connections_per_ip=50))
        ws_a = f"ws://127.0.0.1:{edge_a.port}/v2/ws/stream"
        clients = [await on(ws_a) for _ in range(CLIENTS)]
        positions, seen = [], []
        for client in clients:
            reply = await client.subscribe(ES, TYPES)
            positions.append({s["tick_type"]: s["start_sequence"] for s in reply["streams"]})
            seen.append([])
        await asyncio.gather(
            *(take(c, 3, p, s) for c, p, s in zip(clients, positions, seen, strict=True))
        )
        await edge_a.kill()  # no close frame: the sockets just die
        await asyncio.gather(
            *(until_cut(c, p, s) for c, p, s in zip(clients, positions, seen, strict=True))
        )
        moved = [await on(edge_b.ws_url) for _ in range(CLIENTS)]
        for client, at in zip(moved, positions, strict=True):
            reply = await client.subscribe(ES, TYPES, resume_from=dict(at))
            assert reply["server_id"] == clients[0].greeting["data"]["server_id"]
        await asyncio.gather(
            *(take(c, 5, p, s) for c, p, s in zip(moved, positions, seen, strict=True))
        )
        for client, got in zip(moved, seen, strict=True):
            assert not [m for m in client.seen if m["type"] == "info"]  # no gap reported
            for tick_type in TYPES:
                assert_contiguous([q for t, q in got if t == tick_type])
            await client.close()
    finally:
        await edge_a.kill()
