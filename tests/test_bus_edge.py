"""The edge server (`ibstream serve --from-bus`) against a real nats-server, with a scripted
publisher on the bus: the source's sequences and bytes to WebSocket and SSE clients, resume
from a ring filled before any client came, malformed bus messages skipped, a source that does
not answer, a source restart, and NATS away at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

from ibstream.bus import wire
from ibstream.bus.nats_server import NatsServer, free_port
from ibstream.bus.serve import start_edge_server
from ibstream.model import Tick, TickType
from ibstream.protocol.encode import encode_tick, tick_prefix
from ibstream.server.run import ServerHandle
from ibstream.server.settings import ServerSettings
from tests.bus_fixtures import AAPL, ScriptedSource, nats_server, stopped_at_end
from tests.conftest import WAIT, WSClient, get_json, sse, sse_events
from tests.schema_check import SENT

__all__ = ["nats_server"]  # a fixture, imported for pytest

CID = AAPL.contract_id


@pytest.fixture
async def source(nats_server: NatsServer) -> AsyncIterator[ScriptedSource]:
    scripted = await ScriptedSource(nats_server.url).start()
    try:
        yield scripted
    finally:
        await scripted.stop()


async def edge_on(url: str, **overrides: object) -> ServerHandle:
    options: dict = {"port": 0, "from_bus": url, "sent_observer": SENT, "ib_connect_timeout": WAIT}
    options.update(overrides)
    return await start_edge_server(ServerSettings(**options))


@pytest.fixture
async def edges() -> AsyncIterator[list[ServerHandle]]:
    async with stopped_at_end() as started:
        yield started


async def connect(server: ServerHandle) -> WSClient:
    conn = await websockets.connect(
        server.ws_url, open_timeout=WAIT, max_queue=4096, max_size=2**24
    )  # as conftest's ws_client: a test reading slowly never blocks the close handshake
    client = WSClient(conn)
    client.greeting = await client.recv()
    return client


async def opened_edge(
    source: ScriptedSource, edges: list[ServerHandle], tick_type: TickType = TickType.LAST
) -> tuple[ServerHandle, WSClient]:
    """A source run with one stream opened, an edge following it and a client connected."""
    await source.started()
    await source.opened(tick_type)
    edges.append(edge := await edge_on(source.url))
    return edge, await connect(edge)


async def raw_ticks(client: WSClient, n: int) -> list[bytes]:
    """The next `n` tick frames exactly as they came over the socket."""
    frames: list[bytes] = []
    async with asyncio.timeout(WAIT):
        while len(frames) < n:
            raw = await client.conn.recv()
            raw = raw.encode() if isinstance(raw, str) else raw
            if orjson.loads(raw)["type"] == "tick":
                frames.append(raw)
    return frames


async def test_edge_serves_the_sources_sequences_and_bytes(
    source: ScriptedSource, edges: list[ServerHandle]
) -> None:
    await source.started()
    await source.opened()
    before = await source.ticks(5)  # on the bus before the edge exists: its ring has them
    edge = await edge_on(source.url)
    edges.append(edge)
    client = await connect(edge)
    assert client.greeting["data"]["server_id"] == source.server_id
    reply = await client.subscribe(CID, ["last"], resume_from={"last": 2})
    assert reply["server_id"] == source.server_id
    stream_id = reply["streams"][0]["stream_id"]
    replayed = await raw_ticks(client, 3)
    after = await source.ticks(4)
    live = await raw_ticks(client, 4)
    expected = [tick_prefix(stream_id) + e.tail for e in before[2:] + after]
    assert replayed + live == expected  # the source's encoding, byte for byte
    # SSE: the same ticks, the source's sequences as event ids, resumed the same way
    path = f"/v2/stream/{CID}/last?resume_from=6"
    async with sse(edge, path) as events:
        seen: list[tuple[str, dict]] = []
        async for event, data, event_id in sse_events(events):
            if event == "subscribed":
                assert data["data"]["server_id"] == source.server_id
                sse_stream = data["data"]["streams"][0]["stream_id"]
                continue
            assert event == "tick", (event, data)
            seen.append((event_id, data))
            if len(seen) == 3:
                break
    expected_sse = [orjson.loads(tick_prefix(sse_stream) + e.tail) for e in after[1:]]
    assert [d for _, d in seen] == expected_sse
    assert [i for i, _ in seen] == ["7", "8", "9"]
    await client.close()


async def test_batched_frames_and_a_second_client_share_the_ring(
    source: ScriptedSource, edges: list[ServerHandle]
) -> None:
    edge, client = await opened_edge(source, edges, TickType.BID_ASK)
    await client.subscribe(CID, ["bid_ask"], batch_ms=50)
    sent = await source.ticks(30, TickType.BID_ASK)
    items: list[dict] = []
    async with asyncio.timeout(WAIT):
        while len(items) < 30:
            msg = await client.recv()
            if msg["type"] == "ticks":
                items += msg["data"]["ticks"]
    assert [i["sequence"] for i in items] == [e.sequence for e in sent]
    for item, entry in zip(items, sent, strict=True):  # the source's item bytes, behind the id
        assert {k: v for k, v in item.items() if k != "stream_id"} == orjson.loads(
            b"{" + entry.item
        )
    late = await connect(edge)  # a second client resumes from the ring alone
    await late.subscribe(CID, ["bid_ask"], resume_from={"bid_ask": 20})
    got = [m["data"]["sequence"] for m in await late.ticks(10)]
    assert got == list(range(21, 31))
    assert len(source.holds) >= 1 and source.holds[0]["tick_type"] == "bid_ask"
    await client.close()
    await late.close()


async def test_malformed_bus_messages_are_skipped(
    source: ScriptedSource, edges: list[ServerHandle], caplog: pytest.LogCaptureFixture
) -> None:
    edge, client = await opened_edge(source, edges)
    await client.subscribe(CID, ["last"])
    caplog.set_level(logging.WARNING, "ibstream.bus")
    await source.raw(wire.tick_subject(CID, "last"), b"short")
    await source.raw(wire.tick_subject(CID, "last"), b"x" * 40)  # a head, then no tick tail
    await source.raw(wire.event_subject(source.server_id), b"{not json")
    await source.raw(wire.event_subject(source.server_id), b'{"status": 3}')
    await source.raw("ibstream.ticks.nope", b"x" * 40)
    await source.raw("ibstream.ticks.265598.nope", b"x" * 40)  # no such tick type
    one = wire.tick_record(encode_tick(Tick(CID, TickType.LAST, 1, price=1.0, size=1.0), 1), 1)
    whole = wire.pack_body(source.server_id, [one], end=True)
    await source.raw(wire.tick_subject(CID, "last"), whole[:-5])  # a record cut short
    await source.raw(wire.tick_subject(CID, "last"), whole + b"xx")  # bytes after the last
    await source.raw(wire.tick_subject(CID, "last"), wire.pack_body("s", [one, one], end=True))
    await source.event("stream_opened", contract_id=CID, tick_type="nope", last_sequence=0)
    await source.event("stream_error", contract_id=CID, tick_type="last")  # no error body
    sent = await source.ticks(3)
    got = await client.ticks(3)
    assert [m["data"]["sequence"] for m in got] == [e.sequence for e in sent]
    status = edge.hub.source.bus_status()
    assert status["malformed"] == 9
    lines = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len([t for t in lines if "malformed message" in t]) == 1  # one for the run
    assert [t.split(":")[1] for t in lines if "event" in t] == [
        " skipped a malformed stream_opened event",
        " skipped a malformed stream_error event",
    ]
    assert not [m for m in client.seen if m["type"] in ("error", "complete")]  # stream lives
    await client.close()


async def test_a_source_that_does_not_answer_fails_the_subscribe(
    source: ScriptedSource, edges: list[ServerHandle]
) -> None:
    await source.started()
    edge = await edge_on(source.url)
    edges.append(edge)
    edge.hub.source.asks.timeout = 0.5
    client = await connect(edge)
    await client.subscribe(CID, ["last"])  # resolved (and cached) while the source answers
    source.answer = False  # a hung source: the next stream's hold gets no reply
    reply = await client.request("subscribe", {"contract_id": CID, "tick_types": ["bid_ask"]})
    assert reply["type"] == "error"
    assert reply["data"]["code"] == "CONNECTION_ERROR"
    assert reply["data"]["recoverable"] is True
    assert "the source does not answer on the bus" in reply["data"]["message"]
    assert "ibstream.control.hold: no reply within 0.5 s" in reply["data"]["message"]
    await source.stop()  # nobody listening at all (NATS says so once it saw the source go)
    reply = await client.request("subscribe", {"contract_id": "MSFT", "tick_types": ["last"]})
    assert reply["data"]["code"] == "CONNECTION_ERROR"
    message = reply["data"]["message"]
    assert (
        "ibstream.control.resolve: no source is listening" in message
        or "resolve: no reply" in message
    )
    await client.close()


async def test_a_restarted_source_reconnects_the_clients_once(
    source: ScriptedSource, edges: list[ServerHandle]
) -> None:
    edge, client = await opened_edge(source, edges)
    await client.subscribe(CID, ["last"])
    await source.ticks(3)
    assert [m["data"]["sequence"] for m in await client.ticks(3)] == [1, 2, 3]
    source.server_id, source.sequences = "fedcba9876543210", {}
    await source.started()
    code, before_close = await client.closed()
    assert code == 1001
    assert [m["data"]["reason"] for m in before_close if m["type"] == "complete"] == [
        "server_shutdown"
    ]
    again = await connect(edge)
    assert again.greeting["data"]["server_id"] == "fedcba9876543210"
    reply = await again.subscribe(CID, ["last"], resume_from={"last": 3})
    assert reply["server_id"] == "fedcba9876543210"
    await source.opened()
    await source.ticks(2)
    got = [m["data"]["sequence"] for m in await again.ticks(2)]
    assert got == [1, 2]  # the new run's numbering, nothing of the old ring
    await again.close()


async def test_nats_away_at_start_is_degraded_then_caught_up(
    tmp_path: Path, edges: list[ServerHandle], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    caplog.set_level(logging.WARNING, "ibstream.bus")
    edge = await edge_on(f"nats://127.0.0.1:{port}", ib_connect_timeout=0.5)
    edges.append(edge)
    status, body = await get_json(edge, "/health")
    assert status == 503 and body["status"] == "degraded"
    assert body["bus"]["connected"] is False and body["bus"]["role"] == "edge"
    assert str(port) in body["bus"]["url"] and "last_error" in body["bus"]
    lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0]
    late = NatsServer(tmp_path / "late", port=port).start()
    try:
        scripted = await ScriptedSource(late.url).start()
        await scripted.started()
        await scripted.opened()
        sent = await scripted.ticks(4)
        assert not edge.hub.source.linked.is_set()
        await asyncio.wait_for(edge.hub.source.linked.wait(), WAIT)  # found and followed
        status, body = await get_json(edge, "/health")
        assert status == 200 and body["bus"]["connected"] is True
        assert body["bus"]["source_server_id"] == scripted.server_id
        client = await connect(edge)
        await client.subscribe(CID, ["last"], resume_from={"last": 0})
        got = [m["data"]["sequence"] for m in await client.ticks(4)]
        assert got == [e.sequence for e in sent]
        await client.close()
        await scripted.stop()
    finally:
        late.kill()


async def test_an_edge_reads_only_its_catch_up_window_of_an_older_run(
    source: ScriptedSource, edges: list[ServerHandle]
) -> None:
    await source.started()
    await source.opened()
    await source.ticks(5)  # older than the edge's catch-up window: not read
    edge = await edge_on(source.url, bus_catch_up=0.001)
    edges.append(edge)
    newer = await source.ticks(1)
    client = await connect(edge)
    await client.subscribe(CID, ["last"], resume_from={"last": 2})
    gap = await client.expect("info", status="gap")
    assert gap["data"]["details"]["reason"] == "not_buffered"  # not `upstream_idle`: unknown
    assert (gap["data"]["details"]["first_missing"], gap["data"]["details"]["last_missing"]) == (
        3,
        5,
    )
    tick = await client.expect("tick")
    assert tick["data"]["sequence"] == newer[0].sequence == 6
    assert edge.hub.source.bus_status()["messages"] == 1  # the one tick after its start
    await client.close()


async def test_the_edge_refuses_what_a_live_server_refuses(
    source: ScriptedSource, edges: list[ServerHandle]
) -> None:
    edge, client = await opened_edge(source, edges)
    arrow = {"contract_id": CID, "tick_types": ["last"], "config": {"format": "arrow"}}
    arrow["config"]["batch_ms"] = 50
    reply = await client.request("subscribe", arrow)
    assert reply["type"] == "error" and reply["data"]["code"] == "INVALID_MESSAGE"
    assert "served by replay servers" in reply["data"]["message"]
    start = {
        "contract_id": CID,
        "tick_types": ["last"],
        "config": {"start": "2026-01-02T14:30:00Z"},
    }
    reply = await client.request("subscribe", start)
    assert reply["type"] == "error" and reply["data"]["details"]["field"] == "start"
    assert edge.hub.channels[(CID, TickType.LAST)].held is False  # nothing held for them
    await source.releases.wait()  # the hold taken before the refusal was given back
    assert [h["contract_id"] for h in source.holds] == [CID]
    assert source.released == [
        {"holder": source.holds[0]["holder"], "contract_id": CID, "tick_type": "last"}
    ]
    await client.close()


async def test_history_on_an_edge_says_where_to_ask(
    source: ScriptedSource, edges: list[ServerHandle]
) -> None:
    edge, client = await opened_edge(source, edges)
    await client.close()
    end = time.time_ns() - 60 * 10**9
    query = f"tick_types=last&start={end - 600 * 10**9}&end={end}"
    async with httpx.AsyncClient(base_url=edge.url, timeout=WAIT) as http:
        answer = await http.get(f"/v2/history/{CID}?{query}")
    assert answer.status_code != 500
    assert "an edge server (--from-bus) has no IB connection for history" in answer.text
