"""Server follow-ups over real sockets: the SSE `token` parameter, where each stream starts
(`start_sequence`), the server instance id, prompt answers while IB is down, and test
clients whose cancellation is never lost.
"""

from __future__ import annotations

import asyncio

import pytest

from ibstream.client import AsyncClient
from ibstream.errors import StreamConnectionError
from ibstream.model import TickType
from tests.conftest import AAPL, WAIT, sse, sse_events
from tests.proxy import TcpProxy

TRANSPORTS = ["websocket", "sse"]


@pytest.mark.parametrize("token", ["x", None])
async def test_sse_client_streams_and_sends_the_token_only_when_given(server, token):
    async with TcpProxy(server.port) as proxy:
        async with AsyncClient(proxy.url, "sse", token=token) as client:
            ticks = await client.collect(AAPL, "bid_ask", limit=5, progress=False)
        sent = b"".join(proxy.sniffed)
    assert len(ticks) == 5 and set(ticks["tick_type"]) == {"bid_ask"}
    assert b"GET /v2/stream/" in sent
    assert b"token=x" not in sent  # a header only: URLs end up in logs
    assert (b"authorization: bearer x" in sent.lower()) == (token is not None)


async def test_sse_token_parameter_is_accepted(server):
    async with sse(server, f"/v2/stream/{AAPL}/bid_ask?token=secret&limit=2") as source:
        assert source.response.status_code == 200
        events = [event async for event, _, _ in sse_events(source)]
    assert events == ["subscribed", "tick", "tick", "complete"]


async def test_subscribed_says_where_each_stream_starts_and_which_server(server, ws_client):
    first = await ws_client(server)
    server_id = first.greeting["data"]["server_id"]
    assert len(server_id) == 16 and int(server_id, 16) >= 0
    await first.subscribe(AAPL, ["bid_ask"])
    last = (await first.ticks(5))[-1]["data"]["sequence"]

    joining = await ws_client(server)
    assert joining.greeting["data"]["server_id"] == server_id
    data = await joining.subscribe(AAPL, ["bid_ask"])
    assert data["server_id"] == server_id
    (stream,) = data["streams"]
    assert stream["start_sequence"] >= last
    tick = await joining.expect("tick")
    assert tick["data"]["sequence"] == stream["start_sequence"] + 1

    resuming = await ws_client(server)
    data = await resuming.subscribe(AAPL, ["bid_ask"], resume_from=last - 2)
    assert data["streams"][0]["start_sequence"] == last - 2
    assert (await resuming.expect("tick"))["data"]["sequence"] == last - 1

    beyond = server.hub.last_sequence(AAPL, TickType.BID_ASK) + 1000
    lost = await ws_client(server)
    data = await lost.subscribe(AAPL, ["bid_ask"], resume_from=beyond)
    assert data["streams"][0]["start_sequence"] < beyond  # an unknown position: joined live

    async with sse(server, f"/v2/stream/{AAPL}?tick_types=bid_ask,last&limit=1") as source:
        _, subscribed, _ = await anext(sse_events(source))
    assert subscribed["data"]["server_id"] == server_id
    assert {s["tick_type"] for s in subscribed["data"]["streams"]} == {"bid_ask", "last"}
    assert all(isinstance(s["start_sequence"], int) for s in subscribed["data"]["streams"])


async def ib_down(server, gateway, client) -> None:
    """Stop IB for good (every reconnect refused) and wait until the server noticed."""
    gateway.refuse_connections(3600)
    assert await gateway.drop_connections() == 1
    await client.expect("info", status="ib_disconnected")
    assert not server.source.connected


async def test_subscribe_while_ib_is_down_is_answered_at_once(server, gateway, ws_client):
    client = await ws_client(server)
    await client.subscribe(AAPL, ["bid_ask"])  # AAPL is resolved (cached) from now on
    await ib_down(server, gateway, client)

    async with asyncio.timeout(WAIT):  # the answer, not the client's timeout
        reply = await client.request("subscribe", {"contract_id": "ES", "tick_types": ["last"]})
    assert reply["type"] == "error", reply
    error = reply["data"]
    assert error["code"] == "CONNECTION_ERROR" and error["recoverable"] is True
    assert "IB is not connected" in error["message"] and "retrying" in error["message"]

    # A contract resolved before subscribes now: its stream starts once IB is back.
    data = await client.subscribe(AAPL, ["last"])
    (stream,) = data["streams"]
    info = await client.expect("info", status="ib_disconnected")
    assert info["stream_id"] == stream["stream_id"]
    gateway.refuse_connections(0)
    await client.expect("info", status="resumed")
    (tick,) = await client.ticks(1, stream["stream_id"])
    assert tick["data"]["sequence"] == stream["start_sequence"] + 1


async def test_subscribe_while_tws_lost_ib_is_answered_at_once(server, gateway, ws_client):
    client = await ws_client(server)
    await client.subscribe(AAPL, ["bid_ask"])
    gateway.send_error(1100)  # TWS is up, but has lost IB's servers
    await client.expect("info", status="ib_disconnected")
    reply = await client.request("subscribe", {"contract_id": "ES", "tick_types": ["last"]})
    assert reply["type"] == "error" and reply["data"]["code"] == "CONNECTION_ERROR", reply
    assert "lost its connection to IB" in reply["data"]["message"]
    gateway.send_error(1102)
    await client.expect("info", status="resumed")
    data = await client.subscribe("ES", ["last"])
    assert data["contract"]["symbol"] == "ES"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_client_subscribe_while_ib_is_down_raises_the_servers_error(
    server, gateway, ws_client, transport
):
    watcher = await ws_client(server)
    await watcher.subscribe(AAPL, ["bid_ask"])
    await ib_down(server, gateway, watcher)
    async with AsyncClient(server.url, transport, request_timeout=5.0) as client:
        with pytest.raises(StreamConnectionError, match="IB is not connected"):
            await client.stream("ES", "last")  # not a StreamTimeout after 5 s of retries
        assert client.state == "connected"


async def test_a_cancelled_recv_is_never_swallowed(server, gateway, ws_client):
    """Cancelling a task in `WSClient.recv` cancels it, even when a message is ready at that
    moment (`asyncio.wait_for` on 3.11 returned the message and dropped the cancellation,
    so a reader loop went on and a test hung at teardown)."""
    client = await ws_client(server)
    await client.subscribe(AAPL, ["bid_ask"])
    await gateway.wait_for(lambda: server.hub.last_sequence(AAPL, TickType.BID_ASK) >= 50)
    outcomes = []
    for steps in range(8):  # cancel at each point of a recv whose message is already there
        task = asyncio.create_task(client.recv())
        for _ in range(steps):
            await asyncio.sleep(0)  # let the task run exactly `steps` loop iterations
        if task.cancel():
            outcomes.append((steps, (await asyncio.gather(task, return_exceptions=True))[0]))
    assert outcomes
    for steps, outcome in outcomes:
        assert isinstance(outcome, asyncio.CancelledError), (steps, outcome)
