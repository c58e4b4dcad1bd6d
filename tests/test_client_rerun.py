"""A notebook cell `client = Client(url); client.collect(...)` run again and again, never
closed: each client nobody references any more releases its connection, so the server's
per-IP limit (10 by default) is never reached. A client whose `on_tick` stream or buffer
still runs stays alive for it."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from ibstream.client import AsyncClient, Client
from ibstream.errors import RateLimitExceeded
from ibstream.server.run import ServerHandle
from ibstream.server.settings import ServerSettings
from tests.client_fixtures import threaded_server

PER_IP = ServerSettings().max_connections_per_ip  # the default limit, not the tests' 100
RUNS = PER_IP + 2


@pytest.fixture
def limited_server() -> Iterator[ServerHandle]:
    with threaded_server(max_connections_per_ip=PER_IP) as handle:
        yield handle


def test_sync_client_rerun_without_close_keeps_working(limited_server):
    for _ in range(RUNS):
        client = Client(limited_server.url)  # the cell's line, run again: the name rebound
        frame = client.collect("ES", limit=5, progress=False)
        assert len(frame) == 5
    client.close()


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_async_client_rerun_without_close_keeps_working(make_server, transport):
    server = await make_server(max_connections_per_ip=PER_IP)
    for _ in range(RUNS):
        client = AsyncClient(server.url, transport)
        frame = await client.collect("ES", limit=5, progress=False)
        assert len(frame) == 5
    await client.close()


async def test_a_garbage_client_closes_its_connection(make_server):
    server = await make_server(max_connections_per_ip=PER_IP)
    client = AsyncClient(server.url)
    await client.collect("ES", limit=5, progress=False)
    events = client._events
    del client
    await events.wait_for(lambda: events.state.value == "closed", 10)
    assert events.recent[-1].reason == "garbage-collected without close()"


async def test_an_on_tick_stream_and_a_buffer_keep_their_unreferenced_client_alive(
    make_server,
):
    server = await make_server()
    enough = asyncio.Event()
    ticks: list[dict] = []

    def on_tick(tick: dict) -> None:
        ticks.append(tick)
        if len(ticks) >= 200:
            enough.set()

    buffer = await AsyncClient(server.url).buffer("ES", "bid_ask", max_ticks=1000)
    await AsyncClient(server.url).stream("ES", "bid_ask", on_tick=on_tick)
    gc.collect()  # each client is referenced by nobody but its running subscription
    async with asyncio.timeout(20):
        await enough.wait()
    assert buffer.total >= 100  # opened first on the same channel: it kept receiving too


def test_clients_still_referenced_give_up_their_idle_connections(limited_server):
    kept = []  # as a notebook's output history keeps each cell's last value
    for _ in range(RUNS):
        client = Client(limited_server.url)
        assert len(client.collect("ES", limit=5, progress=False)) == 5
        kept.append(client)
    assert kept[0].state == "connecting"  # its idle connection went to a later client
    assert len(kept[0].collect("ES", limit=5, progress=False)) == 5  # and it reconnects
    busy = kept[1].stream("ES", "last")  # a client with a stream open keeps its connection
    next(iter(busy))
    for _ in range(RUNS):
        assert len(Client(limited_server.url).collect("ES", limit=5, progress=False)) == 5
    assert kept[1].state == "connected" and busy.active
    busy.close()
    for client in kept:
        client.close()


async def test_clients_subscribing_at_once_never_close_each_other(make_server):
    """A client under way (connecting, subscribing) is not idle: a neighbour refused for the
    per-IP limit frees only finished clients' connections, never one in the middle of a
    subscribe. Each collect gets its ticks or the server's own RateLimitExceeded."""
    server = await make_server(max_connections_per_ip=4)
    clients = [AsyncClient(server.url) for _ in range(6)]
    try:
        results = await asyncio.gather(
            *(c.collect("ES", limit=20, progress=False) for c in clients), return_exceptions=True
        )
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    for result in results:
        if isinstance(result, BaseException):
            assert isinstance(result, RateLimitExceeded), repr(result)
        else:
            assert len(result) == 20
    assert sum(not isinstance(r, BaseException) for r in results) >= 4
