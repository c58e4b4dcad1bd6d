"""StreamClient against the real server: replies matched to requests, errors raised, ends."""

import asyncio

import pytest

from ibstream.client import StreamClient
from ibstream.errors import ErrorCode, StreamError


async def test_limit_streams_end_the_message_loop(server):
    async with StreamClient(server.ws_url) as client:
        assert client.greeting["data"]["version"] == "2.0"
        reply = await client.subscribe("ES", ["bid_ask", "last"], limit=5)
        assert reply["contract"]["symbol"] == "ES" and len(client.open_streams) == 2
        msgs = [m async for m in client.messages()]
    completes = [m for m in msgs if m["type"] == "complete"]
    assert {c["data"]["reason"] for c in completes} == {"limit_reached"} and len(completes) == 2
    assert sum(m["type"] == "tick" for m in msgs) == 10
    assert client.open_streams == set()


async def test_error_replies_raise_with_protocol_code(server):
    async with StreamClient(server.ws_url) as client:
        with pytest.raises(StreamError) as info:
            await client.subscribe("NOSUCH", ["last"])
        assert info.value.code is ErrorCode.CONTRACT_NOT_FOUND
        with pytest.raises(StreamError) as info:
            await client.subscribe("ES", ["trades"])
        assert info.value.code is ErrorCode.INVALID_TICK_TYPE
        stream_id = (await client.subscribe("ES", ["last"]))["streams"][0]["stream_id"]
        final = await client.unsubscribe(stream_id)
        assert final["reason"] == "unsubscribed"
        with pytest.raises(StreamError) as info:
            await client.unsubscribe(stream_id)
        assert info.value.code is ErrorCode.STREAM_NOT_FOUND


async def test_server_shutdown_ends_messages_and_fails_requests(make_server):
    server = await make_server()
    async with StreamClient(server.ws_url) as client:
        await client.subscribe("AAPL", ["last"])
        await server.stop()
        msgs = [m async for m in client.messages()]
        assert msgs[-1]["type"] == "complete" and msgs[-1]["data"]["reason"] == "server_shutdown"
        with pytest.raises(StreamError) as info:
            await client.subscribe("AAPL", ["last"])
        assert info.value.code is ErrorCode.CONNECTION_ERROR


async def test_requests_given_up_on_do_not_break_the_client(server):
    async with StreamClient(server.ws_url) as client:
        for _ in range(20):  # some are cancelled before sending, some while awaiting the reply
            try:
                await asyncio.wait_for(client.request("ping", {"timestamp": "t"}), 0.0001)
            except TimeoutError:
                pass
        assert (await client.request("ping", {"timestamp": "t"}))["type"] == "pong"
        reply = await client.subscribe("ES", ["bid_ask", "last"], limit=3)
        await client.unsubscribe(reply["streams"][0]["stream_id"])
        msgs = [m async for m in client.messages()]  # ends: the unsubscribed one is not awaited
        assert msgs[-1]["type"] == "complete" and client._pending == {}
