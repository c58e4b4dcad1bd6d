"""The WebSocket endpoint and the control/status endpoints, against the gateway simulator."""

from __future__ import annotations

import asyncio
import random
import socket

import orjson
import pytest
import websockets

from ibstream.errors import ErrorCode, StreamError
from ibstream.model import TickType
from ibstream.server.run import USER_TIMEOUTS, bind_socket, start_server
from ibstream.server.settings import ServerSettings
from ibstream.server.subscriber import Subscriber
from tests.conftest import AAPL, EURUSD, WAIT, assert_contiguous, get_json, upstream
from tests.proxy import TcpProxy
from tests.schema_check import SENT

ES = 637533641


async def test_greeting_capabilities(server, ws_client):
    client = await ws_client(server)
    data = client.greeting["data"]
    assert data["version"] == "2.0"
    caps = data["capabilities"]
    assert caps["max_streams_per_connection"] == 20
    assert caps["max_message_bytes"] == 65536
    assert set(caps["supported_tick_types"]) == {"last", "all_last", "bid_ask", "mid_point"}
    assert caps["ping_interval_seconds"] == 20.0
    assert client.greeting["timestamp"].endswith("Z")


async def test_subscribe_ticks_unsubscribe(make_server, gateway, ws_client):
    server = await make_server(channel_grace_seconds=0)  # the last one out cancels at once
    client = await ws_client(server)
    data = await client.subscribe("AAPL", ["bid_ask", "last"])
    assert data["contract"]["contract_id"] == AAPL
    streams = {s["tick_type"]: s["stream_id"] for s in data["streams"]}
    assert set(streams) == {"bid_ask", "last"}
    assert streams["bid_ask"].startswith(f"{AAPL}_bid_ask_")
    ticks = await client.ticks(20, streams["bid_ask"])
    assert_contiguous([t["data"]["sequence"] for t in ticks])
    tick = ticks[0]
    assert set(tick) == {"type", "stream_id", "timestamp", "data"}
    assert {"bid_price", "ask_price", "bid_size", "ask_size", "recv_ns"} <= set(tick["data"])
    assert len(upstream(gateway, AAPL, "BidAsk")) == 1

    reply = await client.request("unsubscribe", {"stream_id": streams["bid_ask"]})
    assert reply["type"] == "unsubscribed" and reply["stream_id"] == streams["bid_ask"]
    assert reply["id"] == reply["data"]["request_id"]
    assert reply["data"]["total_ticks"] >= 20 and reply["data"]["final_sequence"] >= 20
    await gateway.wait_for(lambda: not upstream(gateway, AAPL, "BidAsk"))
    assert len(upstream(gateway, AAPL, "Last")) == 1  # the other stream is untouched

    reply = await client.request("unsubscribe", {"stream_id": streams["bid_ask"]})
    assert reply["type"] == "error" and reply["data"]["code"] == "STREAM_NOT_FOUND"
    assert reply["id"] == reply["data"]["request_id"]
    reply = await client.request("unsubscribe_all")
    assert reply["type"] == "unsubscribed" and reply["data"]["stream_ids"] == [streams["last"]]
    assert reply["id"] == reply["data"]["request_id"]
    await gateway.wait_for(lambda: not upstream(gateway, AAPL, "Last"))


async def test_fifty_clients_share_one_upstream(make_server, gateway, ws_client):
    server = await make_server(channel_grace_seconds=0)
    clients = await asyncio.gather(*(ws_client(server) for _ in range(50)))
    await asyncio.gather(*(c.subscribe(EURUSD, ["bid_ask"]) for c in clients))
    assert len(upstream(gateway, EURUSD, "BidAsk")) == 1
    batches = await asyncio.gather(*(c.ticks(3) for c in clients))
    assert all(len(b) == 3 for b in batches)
    assert len(upstream(gateway, EURUSD, "BidAsk")) == 1
    _, stats = await get_json(server, "/ws/stats")
    assert stats["connections"] == 50
    assert stats["hub"]["upstream_streams"] == 1
    assert stats["hub"]["channels"][0]["clients"] == 50

    await asyncio.gather(*(c.close() for c in clients[:-1]))
    connections = server.context.connections
    await connections.wait_for(lambda: connections.limiter.total == 1, WAIT)
    assert server.hub.stats()["channels"][0]["clients"] == 1
    await clients[-1].ticks(3)  # the last one still streams
    assert len(upstream(gateway, EURUSD, "BidAsk")) == 1
    await clients[-1].close()
    await gateway.wait_for(lambda: not upstream(gateway, EURUSD, "BidAsk"))


async def reply_to(client, body: dict) -> dict:
    """Send a raw request and return the first message that is not a tick, info or complete."""
    await client.send(body)
    async with asyncio.timeout(WAIT):
        while (msg := await client.recv())["type"] in ("tick", "info", "complete"):
            assert "id" not in msg, msg  # messages that reply to nothing carry no id
    return msg


async def test_replies_echo_the_request_id(server, ws_client):
    """Every reply carries the request's id at the top level, with its JSON type as sent."""
    client = await ws_client(server)
    assert "id" not in client.greeting
    sub = {"contract_id": AAPL, "tick_types": ["bid_ask", "last"]}
    reply = await reply_to(client, {"type": "subscribe", "id": "msg-001", "data": sub})
    assert reply["type"] == "subscribed" and list(reply)[:2] == ["type", "id"]
    assert reply["id"] == reply["data"]["request_id"] == "msg-001"
    streams = [s["stream_id"] for s in reply["data"]["streams"]]
    await client.ticks(3)
    reply = await reply_to(client, {"type": "ping", "id": 7, "data": {"timestamp": "t"}})
    assert reply["type"] == "pong" and reply["id"] == 7 and reply["data"]["request_id"] == 7
    reply = await reply_to(client, {"type": "ping", "id": "7"})
    assert reply["type"] == "pong" and reply["id"] == "7"  # a string stays a string
    reply = await reply_to(client, {"type": "ping"})
    assert reply["type"] == "pong" and "id" not in reply and "request_id" not in reply["data"]
    body = {"type": "unsubscribe", "id": 0, "data": {"stream_id": streams[0]}}
    reply = await reply_to(client, body)
    assert reply["type"] == "unsubscribed" and reply["id"] == 0
    assert reply["stream_id"] == streams[0]
    reply = await reply_to(client, body)
    assert reply["type"] == "error" and reply["data"]["code"] == "STREAM_NOT_FOUND"
    assert reply["id"] == 0
    reply = await reply_to(client, {"type": "unsubscribe_all", "id": "all"})
    assert reply["type"] == "unsubscribed" and reply["id"] == "all"
    assert reply["data"]["stream_ids"] == streams[1:]
    bad = {"contract_id": "NOSUCH", "tick_types": ["last"]}
    reply = await reply_to(client, {"type": "subscribe", "id": "nf", "data": bad})
    assert reply["data"]["code"] == "CONTRACT_NOT_FOUND" and reply["id"] == "nf"
    reply = await reply_to(client, {"type": "subscribe", "id": 12, "data": {"tick_types": []}})
    assert reply["data"]["code"] == "INVALID_MESSAGE" and reply["id"] == 12
    reply = await reply_to(client, {"type": "subscribe", "id": "typo", "data": sub, "x": 1})
    assert reply["data"]["code"] == "INVALID_MESSAGE" and reply["id"] == "typo"
    reply = await reply_to(client, {"type": "dance", "id": "what"})
    assert reply["data"]["code"] == "INVALID_MESSAGE" and reply["id"] == "what"
    reply = await reply_to(client, {"type": "ping", "id": ["not", "an", "id"]})
    assert reply["data"]["code"] == "INVALID_MESSAGE" and "id" not in reply  # unusable id
    reply = await reply_to(client, '{"type": "ping", "id": "cut')
    assert reply["data"]["code"] == "INVALID_MESSAGE" and "id" not in reply  # unparsable


async def test_limit_and_timeout_complete(server, ws_client):
    client = await ws_client(server)
    data = await client.subscribe(AAPL, ["bid_ask"], limit=7)
    done = await client.expect("complete")
    assert done["stream_id"] == data["streams"][0]["stream_id"]
    assert done["data"]["reason"] == "limit_reached" and done["data"]["total_ticks"] == 7
    ticks = [m for m in client.seen if m["type"] == "tick"]
    assert len(ticks) == 7

    data = await client.subscribe(AAPL, ["last"], timeout_seconds=0.3)
    done = await client.expect("complete")
    assert done["data"]["reason"] == "timeout" and done["data"]["duration_seconds"] >= 0.3
    assert done["stream_id"] == data["streams"][0]["stream_id"]


async def test_ping_pong(server, ws_client):
    client = await ws_client(server)
    reply = await client.request("ping", {"timestamp": "2026-01-01T00:00:00.000Z"})
    assert reply["type"] == "pong" and reply["id"] == reply["data"]["request_id"]
    assert reply["data"]["client_timestamp"] == "2026-01-01T00:00:00.000Z"
    assert reply["data"]["server_timestamp"].endswith("Z")


async def test_resume_from_ring(server, ws_client):
    first = await ws_client(server)
    await first.subscribe(AAPL, ["bid_ask"])
    seqs = [t["data"]["sequence"] for t in await first.ticks(30)]
    second = await ws_client(server)
    reply = await second.subscribe(AAPL, ["bid_ask"], resume_from=seqs[10])
    assert reply["config"]["resume_from"] == {"bid_ask": seqs[10]}
    replayed = [t["data"]["sequence"] for t in await second.ticks(25)]
    assert replayed[0] == seqs[10] + 1
    assert_contiguous(replayed)


async def test_graceful_shutdown(make_server, ws_client):
    server = await make_server()
    client = await ws_client(server)
    data = await client.subscribe(AAPL, ["bid_ask", "last"])
    await client.ticks(2)
    stopping = asyncio.create_task(server.stop())
    code, got = await client.closed()
    await stopping
    assert code == 1001
    completes = [m for m in got if m["type"] == "complete"]
    assert {m["stream_id"] for m in completes} == {s["stream_id"] for s in data["streams"]}
    assert all(m["data"]["reason"] == "server_shutdown" for m in completes)


async def test_health_contracts_stats(server, ws_client):
    status, health = await get_json(server, "/health")
    assert status == 200 and health["status"] == "ok" and health["ib"]["connected"] is True
    status, found = await get_json(server, "/v2/contracts?symbol=AAPL")
    assert status == 200 and found[0]["contract_id"] == AAPL and found[0]["sec_type"] == "STK"
    status, body = await get_json(server, "/v2/contracts?symbol=NOSUCH")
    assert status == 404 and body["error"]["code"] == "CONTRACT_NOT_FOUND"
    status, body = await get_json(server, "/v2/contracts")
    assert status == 400 and body["error"]["code"] == "INVALID_MESSAGE"
    assert "symbol" in body["error"]["message"]

    client = await ws_client(server)
    await client.subscribe(AAPL, ["last"])
    status, stats = await get_json(server, "/ws/stats")
    assert status == 200 and stats["connections"] == 1 and stats["per_ip"] == {"127.0.0.1": 1}
    sub = stats["subscribers"][0]
    assert sub["transport"] == "ws" and sub["streams"][0]["tick_type"] == "last"
    assert stats["hub"]["upstream_streams"] == 1


async def test_health_degraded_without_ib(make_server):
    server = await make_server(ib_port=1, ib_connect_timeout=0.5)  # nothing listens on port 1
    status, health = await get_json(server, "/health")
    assert status == 503 and health["status"] == "degraded" and health["ib"]["connected"] is False


async def test_control_channel(server):
    async with websockets.connect(server.url.replace("http", "ws") + "/ws/control") as conn:
        await conn.send('{"type":"stats","id":1}')
        reply = orjson.loads(await asyncio.wait_for(conn.recv(), 10))
        assert reply["type"] == "stats" and reply["id"] == reply["data"]["request_id"] == 1
        assert "hub" in reply["data"] and "connections" in reply["data"]
        await conn.send('{"type":"ping","id":"two","data":{"timestamp":5}}')
        reply = orjson.loads(await asyncio.wait_for(conn.recv(), 10))
        assert reply["type"] == "pong" and reply["data"]["client_timestamp"] == 5
        assert reply["id"] == "two"
        await conn.send('{"type":"subscribe","id":3}')
        reply = orjson.loads(await asyncio.wait_for(conn.recv(), 10))
        assert reply["type"] == "error" and reply["data"]["code"] == "INVALID_MESSAGE"
        assert reply["id"] == reply["data"]["request_id"] == 3
        await conn.send('{"type":"ping"}')  # no id: the reply has none
        reply = orjson.loads(await asyncio.wait_for(conn.recv(), 10))
        assert reply["type"] == "pong" and "id" not in reply
        assert "request_id" not in reply["data"]


async def test_close_while_resolving_attaches_nothing(server, monkeypatch):
    """A connection closed while its contract lookup is in flight must not attach afterwards."""
    entered, release = asyncio.Event(), asyncio.Event()
    resolve = server.hub.source.resolve

    async def slow_resolve(spec):
        entered.set()
        await release.wait()
        return await resolve(spec)

    monkeypatch.setattr(server.hub.source, "resolve", slow_resolve)
    sub = Subscriber(server.hub)
    task = asyncio.create_task(sub.subscribe("AAPL", [TickType.LAST]))
    await entered.wait()
    sub.close()
    release.set()
    with pytest.raises(StreamError) as info:
        await task
    assert info.value.code == ErrorCode.CONNECTION_ERROR
    assert not server.hub.channels and not server.hub.source.upstream


async def test_slow_lookup_does_not_block_the_connection(gateway, ws_client):
    """While a subscribe waits on IB (the IB link is frozen: no contract details come back),
    the same connection's ping, unsubscribe and a subscribe that needs no lookup are
    answered; the slow subscribe completes once IB answers."""
    async with TcpProxy(gateway.port) as proxy:
        settings = ServerSettings(
            port=0, ib_port=proxy.port, client_id=random.randint(1, 10**6), sent_observer=SENT
        )
        async with await start_server(settings) as server:
            client = await ws_client(server)
            streams = await client.subscribe(AAPL, ["bid_ask", "last"])  # AAPL now known
            bid_ask = streams["streams"][0]["stream_id"]
            proxy.freeze()
            slow_sub = {"contract_id": ES, "tick_types": ["last"]}
            await client.send({"type": "subscribe", "id": "slow", "data": slow_sub})
            assert (await client.request("ping"))["type"] == "pong"
            reply = await client.request("unsubscribe", {"stream_id": bid_ask})
            assert reply["type"] == "unsubscribed" and reply["stream_id"] == bid_ask
            again = await client.subscribe(AAPL, ["mid_point"])
            assert again["streams"][0]["tick_type"] == "mid_point"
            assert not any(m.get("id") == "slow" for m in client.seen)  # still waiting on IB
            proxy.thaw()
            slow = await client.expect("subscribed", request_id="slow")
            assert slow["data"]["contract"]["contract_id"] == ES


async def test_unsubscribe_all_also_ends_a_subscribe_still_under_way(gateway, ws_client):
    """Requests take effect in the order sent: `unsubscribe_all` after a subscribe still
    waiting on IB waits for it and ends its stream too (no IB slot kept against the client's
    wish), while a ping sent meanwhile is answered at once."""
    async with TcpProxy(gateway.port) as proxy:
        settings = ServerSettings(
            port=0, ib_port=proxy.port, client_id=random.randint(1, 10**6), sent_observer=SENT
        )
        async with await start_server(settings) as server:
            client = await ws_client(server)
            proxy.freeze()
            slow_sub = {"contract_id": ES, "tick_types": ["last"]}
            await client.send({"type": "subscribe", "id": "slow", "data": slow_sub})
            await client.send({"type": "unsubscribe_all", "id": "all"})
            assert (await client.request("ping"))["type"] == "pong"
            assert not any(m.get("id") in ("slow", "all") for m in client.seen)
            proxy.thaw()
            slow = await client.expect("subscribed", request_id="slow")
            ended = await client.expect("unsubscribed", request_id="all")
            assert ended["data"]["stream_ids"] == [slow["data"]["streams"][0]["stream_id"]]
            (conn,) = server.context.connections.live
            assert conn.subscriber.streams == {}


async def test_every_sent_frame_reaches_the_observer(make_server, ws_client):
    """settings.sent_observer sees exactly the frames the clients receive, on both sockets."""
    observed: list[bytes] = []
    server = await make_server(sent_observer=observed.append)
    client = await ws_client(server)
    await client.subscribe(AAPL, ["bid_ask"], limit=3)
    await client.expect("complete")
    assert [orjson.loads(p) for p in observed] == client.seen
    del observed[:]
    async with websockets.connect(server.url.replace("http", "ws") + "/ws/control") as conn:
        await conn.send('{"type":"ping","id":1}')
        assert orjson.loads(await asyncio.wait_for(conn.recv(), WAIT))["type"] == "pong"
    assert [orjson.loads(p)["type"] for p in observed] == ["pong"]


def test_accepted_sockets_inherit_the_send_limits():
    """The kernel resets a peer that takes no data (TCP_USER_TIMEOUT), and the small send
    buffer, both set on the listening socket, hold for every accepted connection."""
    listener = bind_socket("127.0.0.1", 0, send_buffer=8192, send_timeout=0.5)
    listener.listen()
    with listener, socket.create_connection(listener.getsockname()[:2]):
        accepted, _ = listener.accept()
        with accepted:
            if hasattr(socket, "TCP_USER_TIMEOUT"):
                got = accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
                assert got == USER_TIMEOUTS * 500
            assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) <= 2 * 8192


async def test_a_busy_port_fails_before_any_ib_connection(gateway):
    """The socket is bound first: a busy port raises at once and never leaves an IB
    connection (and its API client id) behind."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    settings = ServerSettings(
        port=busy.getsockname()[1], ib_port=gateway.port, client_id=random.randint(1, 10**6)
    )
    try:
        with pytest.raises(OSError):
            await start_server(settings)
    finally:
        busy.close()
    await gateway.wait_for(lambda: gateway.connections == 0, timeout=WAIT)
    assert gateway.connections == 0


async def test_a_given_socket_off_loopback_needs_a_token(gateway):
    """start_server(sock=...) checks where that socket listens, not settings.host."""
    sock = bind_socket("0.0.0.0", 0)
    settings = ServerSettings(port=0, ib_port=gateway.port, client_id=random.randint(1, 10**6))
    try:
        with pytest.raises(StreamError) as refused:
            await start_server(settings, sock=sock)
    finally:
        sock.close()
    assert refused.value.code == ErrorCode.AUTH_REQUIRED
    assert gateway.connections == 0
