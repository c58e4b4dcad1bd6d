"""Clients the server did not write: one built from the protocol document alone, and hostile
ones (values beyond 64 bits, unknown fields, subscribes that fail part-way). Each gets an
answer, the connection stays usable and nothing is left attached."""

from __future__ import annotations

import json

import orjson
import pytest
import websockets

from ibstream.server.subscriber import Subscriber
from tests.conftest import AAPL, WAIT
from tests.test_fuzz_protocol import answer, failure

DOC_PING = '{"type":"ping","id":"msg-003","timestamp":"2025-01-15T10:30:00.123Z"}'


def control_url(server) -> str:
    return server.url.replace("http", "ws") + "/ws/control"


@pytest.mark.parametrize("path", ["/v2/ws/stream", "/ws/control"])
async def test_a_client_written_from_the_protocol_document(server, path):
    """The original v2 protocol's messages carry `timestamp` and `metadata` at the top level:
    its ping gets a pong with both timestamps, on both WebSocket endpoints."""
    url = server.ws_url if path == "/v2/ws/stream" else control_url(server)
    async with websockets.connect(url, open_timeout=WAIT) as conn:
        if path == "/v2/ws/stream":
            assert orjson.loads(await conn.recv())["type"] == "connected"
        await conn.send(DOC_PING)
        pong = await answer(conn)
        assert pong["type"] == "pong" and pong["id"] == "msg-003", pong
        assert pong["data"]["client_timestamp"] == "2025-01-15T10:30:00.123Z"
        assert pong["data"]["server_timestamp"].endswith("Z")
        if path == "/v2/ws/stream":
            await conn.send(
                orjson.dumps(
                    {
                        "type": "subscribe",
                        "id": "msg-004",
                        "timestamp": "2025-01-15T10:30:01.000Z",
                        "metadata": {"client": "doc", "attempt": 1},
                        "data": {"contract_id": AAPL, "tick_types": ["last"]},
                    }
                )
            )
            assert (await answer(conn))["type"] == "subscribed"


async def test_an_unknown_top_level_field_is_named_and_recoverable(server, ws_client):
    client = await ws_client(server)
    await client.send({"type": "ping", "id": "u1", "sent_by": "a newer client"})
    error = await client.expect("error")
    data = error["data"]
    assert error["id"] == "u1" and data["code"] == "INVALID_MESSAGE"
    assert data["recoverable"] is True and data["details"]["field"] == "sent_by"
    assert "'sent_by'" in data["message"]
    assert (await client.request("ping"))["type"] == "pong"  # still open


def attached(server) -> list:
    """Every trace a subscribe leaves: streams of connections, hub members, upstream."""
    streams = [s for c in server.context.connections.live for s in c.subscriber.streams]
    members = [h for ch in server.hub.channels.values() for h in ch.members]
    return [*streams, *members, *server.hub.channels, *server.hub.source.upstream]


async def test_a_resume_position_beyond_64_bits_is_refused_and_attaches_nothing(server, ws_client):
    client = await ws_client(server)
    data = {"contract_id": AAPL, "tick_types": ["last"], "config": {"resume_from": 2**64}}
    await client.send(json.dumps({"type": "subscribe", "id": "big", "data": data}))
    error = await client.expect("error")
    assert error["id"] == "big"
    assert error["data"]["details"]["field"] == "data.config.resume_from"
    assert error["data"]["details"]["got"] == str(2**64)
    assert attached(server) == []
    await client.send(
        json.dumps({"type": "subscribe", "data": {**data, "config": {"limit": 2**63}}})
    )
    assert (await client.expect("error"))["data"]["details"]["field"] == "data.config.limit"
    top = {**data, "config": {"resume_from": 2**63 - 1}}  # the largest still works
    sub = await client.subscribe(top["contract_id"], top["tick_types"], **top["config"])
    gap = await client.expect("info", status="gap")
    assert gap["data"]["details"]["reason"] == "unknown_sequence"
    (stream,) = sub["streams"]
    assert (await client.request("unsubscribe", {"stream_id": stream["stream_id"]}))[
        "type"
    ] == "unsubscribed"


@pytest.mark.parametrize("where", ["attach", "replay", "start"])
async def test_a_subscribe_that_fails_part_way_leaves_nothing_attached(
    server, ws_client, monkeypatch, where
):
    """A failure after validation (injected: the upstream request, the replay, the start
    after `subscribed`) undoes the subscribe and answers an error with the request id."""
    source, hub = server.hub.source, server.hub
    subscribe_upstream = source.subscribe

    def upstream_fails_for_last(contract, tick_type):
        if tick_type.value == "last":
            raise RuntimeError("injected")
        subscribe_upstream(contract, tick_type)

    def boom(*args, **kwargs):
        raise RuntimeError("injected")

    if where == "attach":
        monkeypatch.setattr(source, "subscribe", upstream_fails_for_last)
    elif where == "replay":
        monkeypatch.setattr(hub, "replay", boom)
    else:
        monkeypatch.setattr(Subscriber, "start", boom)
    client = await ws_client(server)
    config = {"resume_from": {"bid_ask": 0, "last": 0}}
    data = {"contract_id": AAPL, "tick_types": ["bid_ask", "last"], "config": config}
    await client.send({"type": "subscribe", "id": "s1", "data": data})
    error = await client.expect("error")
    assert error["id"] == "s1" and error["data"]["code"] == "INTERNAL_ERROR"
    told = [m for m in client.seen if m["type"] == "subscribed"]
    ended = [m["stream_id"] for m in client.seen if m["type"] == "complete"]
    assert ended == [s["stream_id"] for t in told for s in t["data"]["streams"]]
    assert all(m["data"]["reason"] == "error" for m in client.seen if m["type"] == "complete")
    assert attached(server) == []
    assert (await client.request("ping"))["type"] == "pong"
    monkeypatch.undo()
    assert (await client.subscribe(AAPL, ["bid_ask", "last"]))["streams"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"ping","id":"x","data":%d}' % 2**64,
        b'{"type":"ping","id":"x","data":{"timestamp":%d}}' % 2**64,
        b'{"type":"ping","id":"x","data":{"timestamp":-1e400}}',
        b'{"type":"ping","id":"x","data":{"timestamp":"%s"}}' % (b"t" * 60_000),
        b'{"type":%d,"id":"x"}' % 2**64,
        b'{"type":"subscribe","id":"x","data":{"contract_id":"AAPL","tick_types":[%d]}}' % 2**64,
        b'{"type":"subscribe","id":"x","data":{"contract_id":"AAPL","tick_types":["%s"]}}'
        % (b"z" * 60_000),
        b'{"type":"unsubscribe","id":"x","data":{"stream_id":"%s"}}' % (b"s" * 60_000),
        b'{"type":"ping","id":"x","%s":1}' % (b"k" * 60_000),
        b'{"type":"ping","id":"x","data":%s}' % (b"9" * 4000),
    ],
    ids=[
        "data-2**64",
        "timestamp-2**64",
        "timestamp-inf",
        "timestamp-60k",
        "type-2**64",
        "tick-type-2**64",
        "tick-type-60k",
        "stream-id-60k",
        "field-name-60k",
        "data-4000-digits",
    ],
)
@pytest.mark.parametrize("path", ["/v2/ws/stream", "/ws/control"])
async def test_a_reply_echoing_what_json_cannot_hold_is_still_sent(server, path, raw, caplog):
    """Values beyond 64 bits, infinities and huge strings come back as bounded text."""
    url = server.ws_url if path == "/v2/ws/stream" else control_url(server)
    async with websockets.connect(url, open_timeout=WAIT) as conn:
        await conn.send(raw.decode())
        got = await answer(conn)
        assert got["id"] == "x" and len(orjson.dumps(got)) < 2_000, got
        await conn.send('{"type":"ping","id":"after"}')
        assert (await answer(conn))["id"] == "after"
    assert not [r for r in caplog.records if failure(r)]


async def test_a_failed_subscribe_leaves_another_clients_idle_channel_its_grace(
    server, ws_client, monkeypatch
):
    """A channel idle in its grace period (its client left, may come back to resume) is not
    cancelled by someone else's subscribe of the same stream failing part-way."""
    first = await ws_client(server)
    (stream,) = (await first.subscribe(AAPL, ["last"]))["streams"]
    await first.request("unsubscribe", {"stream_id": stream["stream_id"]})
    (channel,) = [c for c in server.hub.channels.values() if c.key.tick_type.value == "last"]
    assert channel.expiry is not None  # idle, within its grace period

    def boom(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(Subscriber, "start", boom)
    second = await ws_client(server)
    await second.send(
        {"type": "subscribe", "id": "s2", "data": {"contract_id": AAPL, "tick_types": ["last"]}}
    )
    assert (await second.expect("error"))["id"] == "s2"
    assert list(server.hub.channels.values()) == [channel] and channel.expiry is not None
