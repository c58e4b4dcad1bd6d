"""The client reconnects by itself and resumes every stream exactly where it stopped.

Connections are cut through a TCP proxy, dropped by the server as a slow consumer, and lost
when the server process is killed and started again. In each case the ticks the user gets
have no repeats and (while the server lives) no holes, and the user sees what happened.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from ibstream.client import AsyncClient, Backoff, Client
from tests.client_fixtures import EventRecorder, ServerProcess
from tests.conftest import WAIT, Changes, assert_contiguous
from tests.proxy import TcpProxy

TRANSPORTS = ["websocket", "sse"]
FAST = Backoff(initial=0.05, maximum=0.5)


@pytest.fixture
def recorder() -> EventRecorder:
    return EventRecorder()


@pytest.fixture
async def server_process(gateway):
    process = ServerProcess(gateway.port)
    try:
        yield process
    finally:
        await process.kill()


class Ticks(Changes):
    """An on_tick callback that keeps every tick and wakes waiters."""

    def __init__(self) -> None:
        super().__init__()
        self.got: list[dict] = []

    def __call__(self, tick: dict) -> None:
        self.got.append(tick)
        self.notify()

    async def more(self, n: int) -> None:
        target = len(self.got) + n
        await self.until(lambda: len(self.got) >= target, timeout=WAIT)


def assert_exact(ticks: list[dict]) -> None:
    """Per (contract, tick type): no repeated sequence and no hole."""
    streams: dict[tuple, list[int]] = {}
    for tick in ticks:
        streams.setdefault((tick["contract_id"], tick["tick_type"]), []).append(tick["sequence"])
    assert streams
    for seqs in streams.values():
        assert_contiguous(seqs)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cut_connection_resumes_without_loss_or_repeat(server, transport, recorder):
    ticks = Ticks()
    async with TcpProxy(server.port) as proxy:
        client = AsyncClient(proxy.url, transport, on_event=recorder, backoff=FAST)
        async with client:
            await client.stream("ES", ("bid_ask", "last"), on_tick=ticks)
            await ticks.more(30)
            assert proxy.cut() >= 1
            late = await client.stream("AAPL", "last")  # asked for while reconnecting
            await client.wait_for(lambda: client.reconnects >= 1, WAIT)
            await client.wait_for(lambda: client.state == "connected", WAIT)
            await ticks.more(60)
            async with asyncio.timeout(WAIT):
                assert (await anext(late))["contract_id"] == 265598
        assert proxy.accepted >= 2
    assert_exact(ticks.got)
    assert recorder.states[:3] == ["connected", "reconnecting", "connected"]
    assert recorder.states[-1] == "closed"
    assert recorder.gaps == []  # the server kept the stream through its grace period


async def test_slow_consumer_drop_resumes_without_loss_or_repeat(make_server, recorder):
    server = await make_server(queue_size=200, send_timeout=1.0, socket_send_buffer=4096)
    stall, stalled = threading.Event(), threading.Event()
    got: list[dict] = []

    def on_tick(tick: dict) -> None:  # runs on the sync client's loop thread
        got.append(tick)
        if len(got) == 20:
            stalled.set()
            stall.wait(WAIT)  # the client stops reading: the server must drop it

    client = Client(server.url, on_event=recorder, backoff=FAST)
    try:
        await asyncio.to_thread(client.stream, "ES", ("bid_ask", "last"), on_tick=on_tick)
        connections = server.context.connections
        await connections.wait_for(lambda: connections.slow_consumers >= 1, WAIT)
        assert stalled.is_set()
        stall.set()
        await asyncio.to_thread(
            client.wait_for,
            lambda: client.reconnects >= 1 and client.state == "connected" and len(got) >= 80,
            WAIT,
        )
    finally:
        stall.set()
        await asyncio.to_thread(client.close)
    assert_exact(got)
    assert "reconnecting" in recorder.states and client.reconnects >= 1
    assert recorder.gaps == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_server_killed_and_restarted(server_process, transport, recorder):
    await server_process.start()
    ticks = Ticks()
    client = AsyncClient(server_process.url, transport, on_event=recorder, backoff=FAST)
    async with client:
        await client.stream("ES", ("bid_ask", "last"), on_tick=ticks)
        await ticks.more(30)
        await server_process.kill()
        await client.wait_for(lambda: client.state == "reconnecting", WAIT)
        before = list(ticks.got)
        await server_process.start()
        await client.wait_for(lambda: client.state == "connected", WAIT)
        await ticks.more(40)
    after = ticks.got[len(before) :]
    assert client.reconnects >= 1
    assert_exact(before)
    assert_exact(after)  # the new server's numbering, from wherever it starts
    assert min(t["recv_ns"] for t in after) > max(t["recv_ns"] for t in before)
    reasons = {(g.tick_type, g.reason) for g in recorder.gaps}
    assert reasons == {("bid_ask", "unknown_sequence"), ("last", "unknown_sequence")}
    assert recorder.states[:3] == ["connected", "reconnecting", "connected"]
