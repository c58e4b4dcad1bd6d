"""An edge process kill -9ed under 20 clients: each reconnects to the other edge with its
positions (`resume_from`) and gets every tick once, none lost, none repeated: the other
edge's rings were filled from the bus whether or not a client held the stream there. Both
with raw WebSocket clients resuming by hand and with the library's own
`AsyncClient(server=[edge_a, edge_b])`, which fails over to the next URL by itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import websockets

from ibstream.bus.nats_server import NatsServer
from ibstream.client import AsyncClient
from ibstream.gateway import GatewaySimulator
from ibstream.server.run import ServerHandle
from tests.bus_fixtures import nats_server, stopped_at_end
from tests.client_fixtures import EventRecorder, ServerProcess
from tests.conftest import WAIT, WSClient, assert_contiguous
from tests.test_bus_edge import edge_on
from tests.test_bus_edge_source import ES, FAST, TYPES, take
from tests.test_client_reconnect import Ticks, assert_exact

__all__ = ["nats_server"]  # a fixture, imported for pytest

CLIENTS = 20


@pytest.fixture
async def two_edges(
    nats_server: NatsServer, make_server, gateway: GatewaySimulator
) -> AsyncIterator[tuple[ServerProcess, ServerHandle]]:
    """A source on the bus, edge A in its own process (to kill -9) and edge B in this one."""
    await make_server(bus=nats_server.url)
    edge_a = ServerProcess(gateway.port)
    try:
        async with stopped_at_end() as started:
            await edge_a.start("--from-bus", nats_server.url, "--max-connections-per-ip", "50")
            started.append(edge_b := await edge_on(nats_server.url, max_connections_per_ip=50))
            yield edge_a, edge_b
    finally:
        await edge_a.kill()


def per_stream(ticks: Ticks) -> dict[str, int]:
    counts = dict.fromkeys(TYPES, 0)
    for tick in ticks.got:
        counts[tick["tick_type"]] += 1
    return counts


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


async def test_an_edge_killed_under_20_clients_they_resume_on_the_other(two_edges) -> None:
    edge_a, edge_b = two_edges
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


async def test_an_edge_killed_under_20_clients_they_fail_over_to_the_next_url(
    two_edges,
) -> None:
    edge_a, edge_b = two_edges
    urls = [edge_a.url, edge_b.url]
    streams = [Ticks() for _ in range(CLIENTS)]
    events = [EventRecorder() for _ in streams]
    clients = [AsyncClient(urls, backoff=FAST, on_event=e) for e in events]
    try:
        for client, ticks in zip(clients, streams, strict=True):
            await client.connect()
            await client.stream("ES", TYPES, on_tick=ticks)
        for ticks in streams:
            await ticks.until(lambda t=ticks: min(per_stream(t).values()) >= 2, timeout=WAIT)
        assert {c.server for c in clients} == {edge_a.url}
        before = [len(t.got) for t in streams]
        await edge_a.kill()  # no close frame: the sockets just die
        for client in clients:
            await client.wait_for(lambda c=client: c.server == edge_b.url, WAIT)
            await client.wait_for(lambda c=client: c.state == "connected", WAIT)
        for ticks, had in zip(streams, before, strict=True):
            await ticks.until(lambda t=ticks, n=had: len(t.got) >= n + 20, timeout=WAIT)
        for ticks, seen in zip(streams, events, strict=True):
            assert_exact(ticks.got)  # per stream: every sequence once, across the move
            assert not seen.gaps, seen.gaps
    finally:
        await asyncio.gather(*(c.close() for c in clients))
