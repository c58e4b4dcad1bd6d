"""Edges behind a real source (`ibstream serve --bus`, on the gateway simulator) over a real
nats-server: a client moving edge A -> edge B -> the source resumes without a gap or a
repeat; the source's IB drop reaches edge clients as `ib_disconnected` / `resumed` while
they stay connected; the source process kill -9ed and restarted leaves the edge up and its
clients with one `server_restarted` gap per stream, nothing repeated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ibstream.bus.nats_server import NatsServer
from ibstream.client import AsyncClient, Backoff
from ibstream.gateway import GatewaySimulator
from ibstream.server.run import ServerHandle
from tests.bus_fixtures import nats_server, stopped_at_end
from tests.client_fixtures import EventRecorder, ServerProcess
from tests.conftest import WAIT, WSClient, assert_contiguous, get_json, upstream
from tests.test_bus_edge import connect, edge_on
from tests.test_client_reconnect import Ticks, assert_exact

__all__ = ["nats_server"]  # a fixture, imported for pytest

ES = 637533641
TYPES = ["bid_ask", "last"]
FAST = Backoff(initial=0.05, maximum=0.5)


@pytest.fixture
async def edges() -> AsyncIterator[list[ServerHandle]]:
    async with stopped_at_end() as started:
        yield started


async def take(
    client: WSClient,
    n: int,
    positions: dict[str, int],
    seen: list,
    until: str | None = None,
    timeout: float = WAIT,
) -> None:
    """Read until `n` more ticks of each stream arrived (or, with `until`, an `info` of that
    status), checking each tick continues its stream's position by exactly one (a replay
    included); `timeout`: for each message."""
    counts = dict.fromkeys(positions, 0)
    while min(counts.values()) < n:
        msg = await client.recv(timeout)
        if msg["type"] == "info" and msg["data"]["status"] == until:
            return
        if msg["type"] != "tick":
            continue
        data = msg["data"]
        tick_type, seq = data["tick_type"], data["sequence"]
        assert seq == positions[tick_type] + 1, (tick_type, positions[tick_type], seq)
        positions[tick_type] = seq
        counts[tick_type] += 1
        seen.append((tick_type, seq))


async def test_a_client_moves_edge_to_edge_to_source_without_a_gap_or_a_repeat(
    nats_server: NatsServer, make_server, gateway: GatewaySimulator, edges: list[ServerHandle]
) -> None:
    source = await make_server(bus=nats_server.url)
    edges.append(edge_a := await edge_on(nats_server.url))
    edges.append(edge_b := await edge_on(nats_server.url))
    seen: list[tuple[str, int]] = []
    client = await connect(edge_a)
    server_id = client.greeting["data"]["server_id"]
    assert server_id == source.hub.server_id
    reply = await client.subscribe(ES, TYPES)
    positions = {s["tick_type"]: s["start_sequence"] for s in reply["streams"]}
    await take(client, 10, positions, seen)
    await client.close()  # ticks go on meanwhile: edge B's ring has them
    for server in (edge_b, source):
        client = await connect(server)
        assert client.greeting["data"]["server_id"] == server_id
        reply = await client.subscribe(ES, TYPES, resume_from=dict(positions))
        assert reply["server_id"] == server_id
        await take(client, 10, positions, seen)
        gaps = [m for m in client.seen if m["type"] == "info" and m["data"]["status"] == "gap"]
        assert gaps == []
        await client.close()
    for tick_type in TYPES:
        seqs = [s for t, s in seen if t == tick_type]
        assert_contiguous(seqs)
    # contract lookup goes to the source: the same answer, an unknown symbol the same error
    assert await get_json(edge_b, "/v2/contracts?symbol=ES") == await get_json(
        source, "/v2/contracts?symbol=ES"
    )
    status, body = await get_json(edge_b, "/v2/contracts?symbol=NOSUCHTHING")
    assert status == 404 and body["error"]["code"] == "CONTRACT_NOT_FOUND"
    # one IB subscription per stream however many edges and clients watched it
    assert len(upstream(gateway, ES, "BidAsk")) == len(upstream(gateway, ES, "Last")) == 1


async def test_the_sources_ib_drop_reaches_edge_clients_who_stay_connected(
    nats_server: NatsServer, make_server, gateway: GatewaySimulator, edges: list[ServerHandle]
) -> None:
    await make_server(bus=nats_server.url)
    edges.append(edge := await edge_on(nats_server.url))
    client = await connect(edge)
    reply = await client.subscribe(ES, TYPES)
    positions = {s["tick_type"]: s["start_sequence"] for s in reply["streams"]}
    streams = {s["stream_id"] for s in reply["streams"]}
    seen: list[tuple[str, int]] = []
    await take(client, 3, positions, seen)
    before_drop = dict(positions)
    assert await gateway.drop_connections() == 1
    info = await client.expect("info", timeout=WAIT, status="ib_disconnected")
    assert info["stream_id"] in streams
    await client.expect("info", timeout=WAIT * 2, status="resumed")
    last = {}
    async with asyncio.timeout(WAIT):
        while len(last) < len(TYPES):
            msg = await client.recv()
            if msg["type"] == "tick":
                last[msg["data"]["tick_type"]] = msg["data"]["sequence"]
    assert all(last[t] > before_drop[t] for t in TYPES)  # sequences go on, never restart
    infos = [m["data"]["status"] for m in client.seen if m["type"] == "info"]
    assert infos.count("ib_disconnected") == infos.count("resumed") == len(streams)
    assert not any(m["type"] == "complete" for m in client.seen)
    pong = await client.request("ping", {"timestamp": "t"})
    assert pong["type"] == "pong"  # the WebSocket stayed open throughout
    # a client resuming from before the drop hears of the outage, as on the source
    again = await connect(edge)
    await again.subscribe(ES, ["last"], resume_from={"last": before_drop["last"]})
    gap = await again.expect("info", status="gap")
    assert gap["data"]["details"]["reason"] == "ib_disconnected"
    await client.close()
    await again.close()


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_source_killed_and_restarted_edge_clients_see_one_restart_gap(
    nats_server: NatsServer, gateway: GatewaySimulator, edges: list[ServerHandle], transport: str
) -> None:
    source = ServerProcess(gateway.port)
    try:
        await source.start("--bus", nats_server.url)
        edges.append(edge := await edge_on(nats_server.url))
        recorder = EventRecorder()
        ticks = Ticks()
        client = AsyncClient(edge.url, transport, on_event=recorder, backoff=FAST)
        async with client:
            await client.stream("ES", TYPES, on_tick=ticks)
            await ticks.more(30)
            old_id = edge.hub.server_id
            await source.kill()  # kill -9: no stream_closed, no goodbye on the bus
            before = list(ticks.got)
            await source.start("--bus", nats_server.url)
            await client.wait_for(lambda: client.reconnects >= 1, WAIT)
            await ticks.more(40)
            status, health = await get_json(edge, "/health")
        after = ticks.got[len(before) :]
        assert edge.hub.server_id != old_id  # the edge follows the new run, and stayed up
        assert status == 200 and health["bus"]["source_server_id"] == edge.hub.server_id
        assert_exact(before)
        assert_exact(after)  # the new run's numbering, nothing of the old one repeated
        assert min(t["recv_ns"] for t in after) > max(t["recv_ns"] for t in before)
        reasons = sorted((g.tick_type, g.reason) for g in recorder.gaps)
        assert reasons == [("bid_ask", "server_restarted"), ("last", "server_restarted")]
    finally:
        await source.kill()


async def test_nats_away_mid_stream_edge_clients_told_and_caught_up(
    tmp_path: Path, make_server, gateway: GatewaySimulator, edges: list[ServerHandle]
) -> None:
    nats_server = NatsServer(tmp_path / "nats").start()  # a persistent store: restarted below
    try:
        source = await make_server(bus=nats_server.url)
        edges.append(edge := await edge_on(nats_server.url))
        client = await connect(edge)
        reply = await client.subscribe(ES, TYPES)
        positions = {s["tick_type"]: s["start_sequence"] for s in reply["streams"]}
        seen: list[tuple[str, int]] = []
        await take(client, 5, positions, seen)
        nats_server.kill()
        await take(client, 10**9, positions, seen, until="bus_disconnected")
        status, health = await get_json(edge, "/health")
        assert status == 503 and health["bus"]["connected"] is False
        numbered = source.hub.ticks_in
        # the source goes on numbering ticks while the bus is away (and buffers them)
        await gateway.wait_for(lambda: source.hub.ticks_in >= numbered + 20, WAIT)
        nats_server.start()  # same port, same store: the source re-sends what it buffered
        await take(client, 20, positions, seen)  # exactly contiguous across the outage
        infos = [m["data"]["status"] for m in client.seen if m["type"] == "info"]
        assert "bus_resumed" in infos
        status, health = await get_json(edge, "/health")
        assert status == 200 and health["bus"]["outages"] == 1
        await client.close()
    finally:
        nats_server.kill()


async def test_an_edge_client_gets_the_streams_interleaved_as_the_source_sent_them(
    nats_server: NatsServer, make_server, gateway: GatewaySimulator, edges: list[ServerHandle]
) -> None:
    """The bus carries each stream's ticks of a millisecond as one message; at 5,000 ticks/s
    a window holds both streams, and the edge merges them back: its client sees quotes and
    trades in exactly the order the source's own client does."""
    source = await make_server(bus=nats_server.url)
    edges.append(edge := await edge_on(nats_server.url))
    gateway.set_rate(5_000, ES)
    direct, far = await connect(source), await connect(edge)
    await direct.subscribe(ES, TYPES)
    await far.subscribe(ES, TYPES)
    near_seen = [(m["data"]["tick_type"], m["data"]["sequence"]) for m in await direct.ticks(3000)]
    far_seen = [(m["data"]["tick_type"], m["data"]["sequence"]) for m in await far.ticks(2000)]
    both = set(near_seen) & set(far_seen)
    assert len(both) >= 1000
    assert [t for t in far_seen if t in both] == [t for t in near_seen if t in both]
    switches = sum(a[0] != b[0] for a, b in zip(far_seen, far_seen[1:], strict=False))
    assert switches >= 100  # the streams really interleave: windows held both
    await direct.close()
    await far.close()


async def test_an_edge_renews_its_holds_so_a_watched_stream_outlives_many_leases(
    nats_server: NatsServer,
    make_server,
    gateway: GatewaySimulator,
    edges: list[ServerHandle],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A lease of 1 s and a client watching for about 3.5 s (3.5 leases): the edge renews
    every third of it, so the source never lets the stream go and IB sees one subscription."""
    caplog.set_level(logging.INFO, "ibstream.bus")
    await make_server(bus=nats_server.url)
    edges.append(edge := await edge_on(nats_server.url, bus_lease=1.0))
    client = await connect(edge)
    reply = await client.subscribe(ES, TYPES)
    positions = {s["tick_type"]: s["start_sequence"] for s in reply["streams"]}
    started = time.monotonic()
    while time.monotonic() - started < 3.5:  # reading ticks: the time is the test's subject
        await take(client, 20, positions, [])
    assert len(upstream(gateway, ES, "BidAsk")) == len(upstream(gateway, ES, "Last")) == 1
    assert not [r for r in caplog.records if "without a renewal" in r.getMessage()]
    closed = [m for m in client.seen if m["type"] in ("complete", "error")]
    assert closed == []
    await client.close()
