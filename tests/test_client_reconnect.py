"""The client reconnects by itself and resumes every stream exactly where it stopped.

Connections are cut through a TCP proxy, dropped by the server as a slow consumer, and lost
when the server process is killed and started again. In each case the ticks the user gets
have no repeats and (while the server lives) no holes, and the user sees what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

import orjson
import pytest
import websockets

from ibstream.client import AsyncClient, Backoff, Client
from ibstream.model import TickType
from tests.client_fixtures import EventRecorder, ServerProcess
from tests.conftest import AAPL, WAIT, Changes, assert_contiguous
from tests.proxy import TcpProxy

TRANSPORTS = ["websocket", "sse"]
FAST = Backoff(initial=0.05, maximum=0.5)


@pytest.fixture
def recorder() -> EventRecorder:
    return EventRecorder()


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
    assert reasons == {("bid_ask", "server_restarted"), ("last", "server_restarted")}
    assert recorder.states[:3] == ["connected", "reconnecting", "connected"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_reconnect_before_a_first_tick_resumes_from_start_sequence(
    server, gateway, ws_client, transport, recorder
):
    """`subscribed` says where each stream starts, so a stream cut off before its first tick
    still resumes without losing what the server numbered meanwhile."""
    helper = await ws_client(server)  # holds the channels, so their numbering is under way
    await helper.subscribe(AAPL, list(TYPES))
    await gateway.wait_for(lambda: min(sequences(server).values()) >= 3, WAIT)
    gateway.set_rate(0, AAPL)
    await server.source.search("AAPL")  # a round trip to IB: every earlier tick is numbered
    ticks = Ticks()
    async with TcpProxy(server.port) as proxy:
        client = AsyncClient(proxy.url, transport, on_event=recorder, backoff=FAST)
        async with client:
            stream = await client.stream(AAPL, TYPES, on_tick=ticks)
            proxy.freeze()  # nothing more reaches the client
            start = sequences(server)
            assert stream.positions == start and ticks.got == []
            gateway.set_rate(200.0, AAPL)
            await gateway.wait_for(
                lambda: all(n >= start[t] + 3 for t, n in sequences(server).items()), WAIT
            )
            assert proxy.cut() >= 1
            proxy.thaw()
            await client.wait_for(lambda: client.reconnects >= 1, WAIT)
            await ticks.until(lambda: all(len(of_type(ticks.got, t)) >= 5 for t in TYPES))
    for tick_type in TYPES:
        seqs = of_type(ticks.got, tick_type)
        assert seqs[0] == start[tick_type] + 1, (tick_type, start, seqs[:5])
        assert_contiguous(seqs)
    assert recorder.gaps == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_restarted_server_past_the_old_positions_is_subscribed_afresh(
    server_process, transport, recorder
):
    """A new server instance numbers from scratch; once its sequences have passed the old
    positions, resuming from them would replay ticks from before the client came back (and
    ticks below them would be dropped as repeats): the client starts afresh instead."""
    await server_process.start()
    ticks = Ticks()
    async with TcpProxy(server_process.port) as proxy:
        client = AsyncClient(
            proxy.url,
            transport,
            on_event=recorder,
            backoff=FAST,
            connect_timeout=1.0,  # a reconnect attempt held by the frozen proxy fails soon
            request_timeout=1.0,
        )
        async with client:
            stream = await client.stream("ES", TYPES, on_tick=ticks)
            await ticks.until(lambda: all(of_type(ticks.got, t) for t in TYPES))
            await server_process.kill()
            await client.wait_for(lambda: client.state == "reconnecting", WAIT)
            old, before = stream.positions, len(ticks.got)
            proxy.freeze()  # the client cannot come back before the new server has moved on
            await server_process.start()
            async with drive_past(server_process, old) as passed:
                proxy.thaw()
                await client.wait_for(lambda: client.state == "connected", WAIT)
                await ticks.until(
                    lambda: all(len(of_type(ticks.got[before:], t)) >= 5 for t in TYPES)
                )
    after = ticks.got[before:]
    for tick_type in TYPES:
        seqs = of_type(after, tick_type)
        assert seqs[0] > passed[tick_type], (tick_type, old, passed, seqs[:5])  # no replay
        assert_contiguous(seqs)
    assert stream.duplicates == 0
    gaps = {g.tick_type: g for g in recorder.gaps}
    assert sorted(gaps) == sorted(TYPES) and len(recorder.gaps) == 2
    for tick_type, gap in gaps.items():
        assert gap.reason == "server_restarted"
        assert gap.details["last_sequence"] == old[tick_type]
        assert gap.details["old_server_id"] != gap.details["new_server_id"]


TYPES = ("bid_ask", "last")


def sequences(server) -> dict[str, int]:
    return {t: server.hub.last_sequence(AAPL, TickType(t)) for t in TYPES}


def of_type(ticks: list[dict], tick_type: str) -> list[int]:
    return [t["sequence"] for t in ticks if t["tick_type"] == tick_type]


@contextlib.asynccontextmanager
async def drive_past(process: ServerProcess, old: dict[str, int]) -> AsyncIterator[dict]:
    """A second client on the (new) server that reads ES until every stream's sequence is
    past `old`; yields the sequences it reached and stays subscribed meanwhile."""
    url = f"ws://127.0.0.1:{process.port}/v2/ws/stream"
    async with websockets.connect(url, open_timeout=WAIT) as conn:
        await conn.send(
            orjson.dumps(
                {"type": "subscribe", "data": {"contract_id": "ES", "tick_types": list(TYPES)}}
            ).decode()
        )
        reached = dict.fromkeys(TYPES, 0)
        async with asyncio.timeout(WAIT):
            while any(reached[t] <= old.get(t, 0) + 3 for t in TYPES):
                msg = orjson.loads(await conn.recv())
                assert msg["type"] in ("connected", "subscribed", "tick"), msg
                if msg["type"] == "tick":
                    reached[msg["data"]["tick_type"]] = msg["data"]["sequence"]
        yield reached
