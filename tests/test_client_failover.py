"""`Client(server=[a, b])`: the client fails over from one server to the next, in order.

Two real `ibstream serve` processes, each on its own gateway simulator (sharing nothing):
the first is kill -9ed under a stream and the client goes on on the second with one
`server_restarted` gap per stream; a first URL dead at connect leaves the second in use;
both dead is the connection error naming both. Two proxies in front of one server are two
URLs of the same server instance: failing over between them resumes with no gap and no
repeat. Every transport, every bad `server` argument.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ibstream.client import AsyncClient, Backoff, Client, Gap
from ibstream.errors import ErrorCode, StreamError
from ibstream.gateway import GatewaySimulator
from ibstream.server.launch import ServerNotRunning, ensure_server
from tests.client_fixtures import EventRecorder, ServerProcess, free_port
from tests.conftest import WAIT, assert_contiguous, running_gateway
from tests.proxy import TcpProxy
from tests.test_client_reconnect import Ticks

TRANSPORTS = ["websocket", "sse"]
FAST = Backoff(initial=0.05, maximum=0.3)
TYPES = ("bid_ask", "last")


def of_type(ticks: list[dict], tick_type: str) -> list[int]:
    return [t["sequence"] for t in ticks if t["tick_type"] == tick_type]


def assert_exact(ticks: list[dict]) -> None:
    """Per stream: contiguous sequences, nothing repeated."""
    for tick_type in TYPES:
        seqs = of_type(ticks, tick_type)
        if seqs:
            assert_contiguous(seqs)


@pytest.fixture
async def second_gateway() -> AsyncIterator[GatewaySimulator]:
    async with running_gateway(seed=2) as gw:
        yield gw


@pytest.fixture
async def servers(gateway, second_gateway) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes on their own simulators (not started)."""
    a, b = ServerProcess(gateway.port), ServerProcess(second_gateway.port)
    try:
        yield a, b
    finally:
        await a.kill()
        await b.kill()


@pytest.fixture
def recorder() -> EventRecorder:
    return EventRecorder()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_first_server_killed_client_goes_on_on_the_second(servers, transport, recorder):
    a, b = servers
    await asyncio.gather(a.start(), b.start())
    ticks = Ticks()
    client = AsyncClient([a.url, b.url], transport, on_event=recorder, backoff=FAST)
    cut: list[int] = []  # how many ticks had arrived when b's instance was noticed
    client.add_listener(lambda e: isinstance(e, Gap) and cut.append(len(ticks.got)))
    async with client:
        assert client.server == a.url and client.servers == [a.url, b.url]
        await client.stream("ES", TYPES, on_tick=ticks)
        await ticks.until(lambda: all(of_type(ticks.got, t) for t in TYPES))
        await a.kill()
        await client.wait_for(lambda: client.server == b.url, WAIT)
        await client.wait_for(lambda: client.state == "connected", WAIT)
        before = len(ticks.got)
        await ticks.until(lambda: all(len(of_type(ticks.got[before:], t)) >= 5 for t in TYPES))
        frame = await client.contracts("ES")  # over HTTP, to the server in use
        assert len(frame) >= 1
    assert len(set(cut)) == 1  # both gaps at one moment, before any tick of b
    old, new = ticks.got[: cut[0]], ticks.got[cut[0] :]
    assert_exact(old)  # a's numbering, then b's: each contiguous, nothing twice
    assert_exact(new)
    for gap in recorder.gaps:
        assert gap.details["last_sequence"] == of_type(old, gap.tick_type)[-1]
    gaps = [(g.tick_type, g.reason) for g in recorder.gaps]
    assert sorted(gaps) == [("bid_ask", "server_restarted"), ("last", "server_restarted")]
    assert client.reconnects >= 1 and client.servers == [a.url, b.url]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_first_url_dead_at_connect_the_second_is_used(servers, transport, recorder):
    a, b = servers
    await b.start()  # a never started: nothing listens on its port
    ticks = Ticks()
    client = AsyncClient([a.url, b.url], transport, on_event=recorder, backoff=FAST)
    async with client:
        assert client.server == b.url
        await client.stream("ES", TYPES, on_tick=ticks)
        await ticks.more(20)
    assert_exact(ticks.got)
    assert recorder.gaps == [] and client.reconnects == 0
    found = await asyncio.to_thread(ensure_server, [a.url, b.url])
    assert found.url == b.url and not found.started


async def test_both_dead_at_connect_is_a_connection_error_naming_both():
    a, b = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    for transport in TRANSPORTS:
        client = AsyncClient([a, b], transport, connect_timeout=2.0)
        with pytest.raises(StreamError) as caught:
            await client.connect()
        await client.close()
        assert caught.value.code == ErrorCode.CONNECTION_ERROR
        assert a in caught.value.message and b in caught.value.message
        assert caught.value.details["urls"] == [a, b]
    with pytest.raises(ServerNotRunning, match=f"{a} nor at {b}"):
        await asyncio.to_thread(ensure_server, [a, b], start=False)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_both_killed_gives_up_after_the_backoff_naming_both(servers, transport, recorder):
    a, b = servers
    await asyncio.gather(a.start(), b.start())
    ticks = Ticks()
    backoff = Backoff(initial=0.05, maximum=0.1, max_attempts=4)
    client = AsyncClient([a.url, b.url], transport, on_event=recorder, backoff=backoff)
    async with client:
        stream = await client.stream("ES", TYPES, on_tick=ticks)
        await ticks.more(5)
        await asyncio.gather(a.kill(), b.kill())
        await client.wait_for(lambda: client.state == "closed", WAIT)
    assert stream.error is not None and stream.error.code == ErrorCode.CONNECTION_ERROR
    assert a.url in stream.error.message and b.url in stream.error.message
    assert any(a.url in e.error.message for e in recorder.errors)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_two_urls_of_one_server_resume_without_gap_or_repeat(server, transport, recorder):
    """Same `server_id` behind both URLs (two proxies): positions carry over exactly."""
    ticks = Ticks()
    async with TcpProxy(server.port) as first, TcpProxy(server.port) as second:
        client = AsyncClient([first.url, second.url], transport, on_event=recorder, backoff=FAST)
        async with client:
            await client.stream("ES", TYPES, on_tick=ticks)
            await ticks.until(lambda: all(of_type(ticks.got, t) for t in TYPES))
            await first.__aexit__(None, None, None)  # gone: closed and every link cut
            await client.wait_for(lambda: client.server == second.url, WAIT)
            before = len(ticks.got)
            await ticks.until(lambda: all(len(of_type(ticks.got[before:], t)) >= 5 for t in TYPES))
            assert second.accepted >= 1
    assert_exact(ticks.got)  # across the move: contiguous, nothing twice
    assert recorder.gaps == [] and client.reconnects >= 1


def test_sync_client_takes_the_list_too():
    client = Client(["http://127.0.0.1:1", "127.0.0.1:2/"])
    assert client.servers == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert client.server == "http://127.0.0.1:1"
    client.close()


@pytest.mark.parametrize(
    ("server", "error", "words"),
    [
        ([], ValueError, "at least one"),
        ((), ValueError, "at least one"),
        (["http://a:1", 5], TypeError, "got 5 (int)"),
        (["http://a:1", "ftp://b:1"], ValueError, "'ftp://b:1'"),
        (["http://a:1", "http://a:1/"], ValueError, "twice"),
        (8001, TypeError, "list of URLs"),
        ({"http://a:1"}, TypeError, "list of URLs"),
    ],
)
def test_bad_server_arguments_name_server(server, error, words):
    for kind in (AsyncClient, Client):
        with pytest.raises(error, match="server") as caught:
            kind(server)
        assert words in str(caught.value)
