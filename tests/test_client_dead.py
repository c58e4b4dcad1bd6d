"""A server that is not there, or that stops answering: every call fails clearly within its
timeout, and close() returns whatever the server does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from ibstream.client import AsyncClient, Backoff, Client
from ibstream.errors import ErrorCode, StreamError
from tests.client_fixtures import free_port
from tests.conftest import WAIT
from tests.proxy import TcpProxy

TRANSPORTS = ["websocket", "sse"]
CLEAR = {ErrorCode.CONNECTION_ERROR, ErrorCode.STREAM_TIMEOUT}


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A TCP listener that accepts and reads but never answers."""
    connections: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in connections:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_nothing_listening_fails_at_once(transport):
    client = AsyncClient(f"http://127.0.0.1:{free_port()}", transport, connect_timeout=2)
    async with asyncio.timeout(WAIT):
        with pytest.raises(StreamError) as info:
            await client.stream("ES", "last")
        assert info.value.code is ErrorCode.CONNECTION_ERROR
        assert "ibstream serve" in info.value.message
        assert client.state == "connecting"
        await client.close()
    assert client.state == "closed"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_listener_that_never_answers_times_out(transport, silent_port):
    client = AsyncClient(f"http://127.0.0.1:{silent_port}", transport, connect_timeout=0.5)
    async with asyncio.timeout(WAIT):
        with pytest.raises(StreamError) as info:
            await client.collect("ES", limit=5, progress=False)
        assert info.value.code in CLEAR
        await client.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_frozen_server_times_requests_out_and_close_returns(server, transport):
    async with TcpProxy(server.port) as proxy:
        client = AsyncClient(
            proxy.url,
            transport,
            request_timeout=0.5,
            close_timeout=0.5,
            backoff=Backoff(initial=0.05, maximum=0.2),
        )
        async with asyncio.timeout(WAIT):
            stream = await client.stream("ES", "bid_ask")
            await anext(stream)
            proxy.freeze()  # nothing is read or forwarded any more, in either direction
            with pytest.raises(StreamError) as info:
                await client.ping()
            assert info.value.code is ErrorCode.STREAM_TIMEOUT
            with pytest.raises(StreamError) as info:
                await client.stream("ES", "last")
            assert info.value.code in CLEAR
            await client.close()
        assert client.state == "closed"
        with contextlib.suppress(StopAsyncIteration):  # drained, then the end
            async with asyncio.timeout(WAIT):
                async for _ in stream:
                    pass


def test_sync_client_fails_clearly_without_a_server():
    client = Client(f"http://127.0.0.1:{free_port()}", connect_timeout=2)
    with pytest.raises(StreamError) as info:
        client.collect("ES", limit=5, progress=False)
    assert info.value.code is ErrorCode.CONNECTION_ERROR
    client.close()
    assert client.state == "closed"


async def test_idle_sse_client_notices_a_killed_server_within_two_ping_intervals(
    server_process,
):
    interval = 1.0
    await server_process.start()
    client = AsyncClient(server_process.url, "sse", ping_interval=interval)
    try:
        await client.collect("ES", limit=5, progress=False)  # then no response is open
        assert client.state == "connected" and client.subscriptions == []
        await server_process.kill()  # SIGKILL: nothing tells the client
        # the health probe runs every interval, so this takes two at most (a timing that
        # belongs in a bench, not here): the wait is bounded by WAIT only
        await client.wait_for(lambda: client.state == "reconnecting", WAIT)
        await server_process.start()  # back on the same port
        await client.wait_for(lambda: client.state == "connected", WAIT)
        assert client.reconnects == 1
        assert len(await client.collect("ES", limit=5, progress=False)) == 5
    finally:
        await client.close()
