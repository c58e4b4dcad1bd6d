"""Regressions of the research client, over real sockets: a connect, a reconnect or a
subscribe under way yields to close(); giving up ends in `closed` on both transports; a
failing delivery ends its subscription alone; SLOW_CONSUMER names every stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest
import websockets

from ibstream.client import AsyncClient, Backoff, ErrorEvent
from ibstream.errors import ErrorCode, StreamConnectionError, StreamError
from tests.client_fixtures import EventRecorder
from tests.conftest import AAPL, WAIT
from tests.proxy import TcpProxy
from tests.test_server_resume import slow_socket

TRANSPORTS = ["websocket", "sse"]


class Greeter:
    """A WebSocket server that greets only once `greet` is set (a server slow to answer)."""

    def __init__(self) -> None:
        self.greet = asyncio.Event()
        self.accepted = asyncio.Event()
        self.closed = asyncio.Event()
        self.url = ""

    async def _handle(self, ws: websockets.ServerConnection) -> None:
        try:
            # the pong says the client's handshake is done: it now waits for a greeting
            await (await ws.ping())
            self.accepted.set()
            await self.greet.wait()
            await ws.send(orjson.dumps({"type": "connected", "data": {}}).decode())
            await ws.wait_closed()
        finally:
            self.closed.set()


@contextlib.asynccontextmanager
async def greeter() -> AsyncIterator[Greeter]:
    g = Greeter()
    async with websockets.serve(g._handle, "127.0.0.1", 0) as srv:
        g.url = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        yield g


# --- connect under way: close() and a cancel release the socket -----------------------------------
@pytest.mark.parametrize("stop", ["close", "cancel"])
async def test_connect_stopped_midway_leaves_no_socket(stop):
    async with greeter() as server:
        client = AsyncClient(server.url, connect_timeout=30)
        connecting = asyncio.create_task(client.connect())
        async with asyncio.timeout(WAIT):
            await server.accepted.wait()
            if stop == "close":
                await client.close()
            else:
                connecting.cancel()  # Ctrl-C in the sync face cancels the same way
            server.greet.set()  # a socket left open would take the greeting and stay open
            expected = StreamConnectionError if stop == "close" else asyncio.CancelledError
            with pytest.raises(expected):
                await connecting
            await server.closed.wait()
        await client.close()
        assert client.state == "closed"


# --- giving up reconnecting ends in `closed` on both transports -----------------------------------
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_giving_up_ends_in_closed(make_server, transport):
    server = await make_server()
    recorder = EventRecorder()
    backoff = Backoff(initial=0.05, maximum=0.05, max_attempts=2)
    client = AsyncClient(server.url, transport, backoff=backoff, on_event=recorder)
    stream = await client.stream("ES", "last")
    await anext(stream)
    await server.stop()
    with pytest.raises(StreamConnectionError):
        async with asyncio.timeout(WAIT):
            async for _ in stream:
                pass
    assert client.state == "closed" and recorder.states[-1] == "closed"
    await client.close()


# --- close() wakes a subscribe waiting for a reconnect --------------------------------------------
async def test_close_wakes_a_stream_waiting_for_the_reconnect(make_server):
    server = await make_server()
    client = AsyncClient(server.url, request_timeout=60, backoff=Backoff(initial=0.05))
    await client.connect()
    await server.stop()
    await client.wait_for(lambda: client.state == "reconnecting", WAIT)
    opening = asyncio.create_task(client.stream("ES", "last").open())
    await asyncio.sleep(0)  # one turn of the loop: it runs until it waits for the link
    assert not opening.done()
    await client.close()
    with pytest.raises(StreamConnectionError) as info:
        async with asyncio.timeout(WAIT):  # was request_timeout, then StreamTimeout
            await opening
    assert "closed" in info.value.message


async def test_close_wakes_an_sse_stream_waiting_for_its_response(server):
    async with TcpProxy(server.port) as proxy:
        client = AsyncClient(proxy.url, "sse", request_timeout=60)
        await client.connect()
        proxy.freeze()  # the response never comes
        opening = asyncio.create_task(client.stream("ES", "last").open())
        await asyncio.sleep(0)  # one turn of the loop: it runs until it waits for the response
        assert not opening.done()
        await client.close()
        with pytest.raises(StreamConnectionError) as info:
            async with asyncio.timeout(WAIT):
                await opening
        proxy.thaw()
    assert "closed" in info.value.message


# --- a delivery that raises fails that subscription alone, with an event --------------------------
class BrokenSink:
    def __init__(self) -> None:
        self.ended: list = []

    def put(self, tick: dict) -> None:
        raise ValueError("malformed row")

    def end(self, error: StreamError | None = None) -> None:
        self.ended.append(error)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_failing_delivery_fails_its_subscription_alone(server, transport):
    recorder = EventRecorder()
    async with AsyncClient(server.url, transport, on_event=recorder) as client:
        healthy = await client.stream("AAPL", "bid_ask")
        sink = BrokenSink()
        broken = client._new_subscription("ES", "bid_ask", sink)
        await client._open(broken)
        await client.wait_for(lambda: not broken.active, WAIT)
        assert broken.error is not None and broken.error.code is ErrorCode.INTERNAL_ERROR
        assert sink.ended == [broken.error]
        assert [e.error for e in recorder.of(ErrorEvent)] == [broken.error]
        async with asyncio.timeout(WAIT):
            await anext(healthy)
        assert client.reconnects == 0 and client.state == "connected"


# --- SLOW_CONSUMER tells where every stream stands ------------------------------------------------
async def test_slow_consumer_names_every_stream(make_server, gateway, ws_client):
    server = await make_server(queue_size=20, send_timeout=3 * WAIT, socket_send_buffer=4096)
    sock = await slow_socket()
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    slow = await ws_client(server, sock=sock, max_queue=1)
    subscribed = [await slow.subscribe(c, ["bid_ask"]) for c in ("ES", AAPL)]

    def cut_off() -> bool:  # the connection is released from `live` the moment it is cut off
        return server.context.connections.slow_consumers >= 1

    await gateway.wait_for(cut_off, WAIT)  # nobody reads: the queue fills
    code, got = await slow.closed()
    assert code == 1008
    details = got[-1]["data"]["details"]
    assert "last_sent" not in details  # two contracts: one {tick_type: n} cannot say it
    ticks = [m for m in slow.seen + got if m["type"] == "tick"]
    expected = []
    for data in subscribed:
        (stream,) = data["streams"]
        mine = [t["data"]["sequence"] for t in ticks if t["stream_id"] == stream["stream_id"]]
        expected.append(
            {
                "stream_id": stream["stream_id"],
                "contract_id": data["contract"]["contract_id"],
                "tick_type": "bid_ask",
                "last_sent": mine[-1] if mine else stream["start_sequence"],
            }
        )
    assert sorted(details["streams"], key=str) == sorted(expected, key=str)
