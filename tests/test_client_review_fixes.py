"""Regressions of the research client, over real sockets: streams a user lets go of end on
the server too, collect keeps its frame and closing returns when the link stalls, and nothing
blocks the client's own loop thread (more in test_client_lifecycle.py)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import pytest

from ibstream.client import AsyncClient, Client
from ibstream.client import loop as client_loop
from ibstream.errors import ErrorCode, StreamError
from ibstream.server.run import ServerHandle
from tests.client_fixtures import EventRecorder, threaded_server
from tests.conftest import WAIT
from tests.proxy import TcpProxy

TRANSPORTS = ["websocket", "sse"]
ES = 637533641
BOTH = ("bid_ask", "last")


@pytest.fixture
def tserver() -> Iterator[ServerHandle]:
    with threaded_server() as server:
        yield server


def server_streams(server: ServerHandle) -> list[int]:
    return sorted(len(c.subscriber.streams) for c in list(server.context.connections.live))


# --- streams let go of are unsubscribed -----------------------------------------------------------
def test_sync_streams_left_after_a_break_are_unsubscribed(tserver):
    with Client(tserver.url) as client:
        for _ in range(12):  # 20 streams per connection: the 11th used to be refused
            for tick in client.stream("ES", BOTH):
                assert tick["contract_id"] == ES
                break
        kept = client.stream("ES", BOTH)
        assert client.subscriptions == [kept.subscription]
        assert server_streams(tserver) == [2]  # requests are handled in order


async def test_async_streams_let_go_are_unsubscribed(server):
    async with AsyncClient(server.url) as client:
        for _ in range(12):
            async for tick in client.stream("ES", BOTH):
                assert tick["contract_id"] == ES
                break
        kept = await client.stream("ES", BOTH)
        closed = await client.stream("AAPL", "last")
        await closed.aclose()
        await client.ping()  # answered after the unsubscribes
        assert client.subscriptions == [kept.subscription] and not closed.active
        assert server_streams(server) == [2]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_iterator_that_overflows_is_unsubscribed(server, transport):
    recorder = EventRecorder()
    async with AsyncClient(server.url, transport, on_event=recorder) as client:
        lagging = await client.stream("ES", BOTH, max_queue=5)
        await client.wait_for(lambda: not lagging.active, WAIT)
        assert [e.error.code for e in recorder.errors] == [ErrorCode.SLOW_CONSUMER]
        assert client.subscriptions == [] and client.state == "connected"
        if transport == "websocket":
            await client.ping()  # answered after the unsubscribes
            assert server_streams(server) == [0]
        else:
            connections = server.context.connections
            await connections.wait_for(lambda: not connections.live, WAIT)
        with pytest.raises(StreamError) as info:
            async for _ in lagging:
                pass
        assert info.value.code is ErrorCode.SLOW_CONSUMER


# --- collect keeps its frame; cleanup is bounded by close_timeout ---------------------------------
async def test_sync_collect_keeps_its_frame_when_the_link_stalls(server, gateway):
    async with TcpProxy(server.port) as proxy:
        client = Client(proxy.url, request_timeout=3, connect_timeout=1, close_timeout=0.5)
        got: dict = {}

        def collect() -> None:
            try:
                got["frame"] = client.collect(
                    ["ES", "AAPL", "EUR.USD"], seconds=1.5, progress=False
                )
            except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
                got["error"] = exc

        worker = threading.Thread(target=collect)
        worker.start()  # re-checked per market batch: all three open, ticks coming

        def flowing() -> bool:
            subs = client.subscriptions
            return len(subs) == 3 and sum(s.received for s in subs) >= 10

        await gateway.wait_for(flowing, WAIT)
        proxy.freeze()  # replies stop coming; no reset
        await asyncio.to_thread(worker.join, 3 * WAIT)
        proxy.thaw()
        await asyncio.to_thread(client.close)
    assert not worker.is_alive()
    assert "frame" in got, got
    assert len(got["frame"]) > 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_closing_streams_returns_while_the_link_stalls(server, gateway, transport):
    async with TcpProxy(server.port) as proxy:
        client = AsyncClient(proxy.url, transport, request_timeout=60, close_timeout=0.5)
        stream = await client.stream("ES", BOTH)
        await anext(stream)
        collecting = asyncio.create_task(client.collect("AAPL", BOTH, limit=10**6, progress=False))
        await gateway.wait_for(lambda: len(client.subscriptions) == 2, WAIT)
        proxy.freeze()
        async with asyncio.timeout(WAIT):  # was one request_timeout per unsubscribe
            await stream.close()
            collecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collecting
            await client.close()
        proxy.thaw()
    assert client.subscriptions == []


def test_the_outer_deadline_of_a_blocking_call_names_itself():
    with pytest.raises(StreamError) as info:
        client_loop.call(asyncio.Event().wait(), 0.2, "collect")
    assert info.value.code is ErrorCode.STREAM_TIMEOUT
    assert "request_timeout" not in info.value.message and "overall" in info.value.message


# --- a blocking read on the client's own loop thread is refused -----------------------------------
def test_blocking_get_inside_a_callback_is_refused(tserver):
    outcome: dict = {}
    done = threading.Event()
    with Client(tserver.url) as client:
        other = client.stream("AAPL", "bid_ask")
        other.get(timeout=WAIT)

        def on_tick(_tick: dict) -> None:
            if done.is_set():
                return
            with contextlib.suppress(TimeoutError):
                outcome["queued"] = other.get(timeout=0)  # not blocking: allowed
            try:
                other.get(timeout=2)
            except RuntimeError as exc:
                outcome["refused"] = exc
            done.set()

        client.stream("ES", "bid_ask", on_tick=on_tick)
        assert done.wait(WAIT)
    assert "callback" in str(outcome["refused"])
