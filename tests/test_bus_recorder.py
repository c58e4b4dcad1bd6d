"""`ibstream record --from-bus`: the tick store's recorder as its own process on the bus.

A real nats-server (JetStream), the `ibstream record` process, and the source's side of the
protocol published with nats-py + ibstream.bus.wire (events, ticks with message ids, the
contract lookup): the ticks a real server's client received, or the bundled recorded ticks.
The store read back (pyarrow, DuckDB) holds each published tick once with the client's
values; a recorder kill -9ed three times loses nothing and stores nothing twice; what the
bus expired before the recorder read it is a `bus_expired` gap naming the range.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import ibstream.store
from ibstream.bus.nats_server import NatsServer
from ibstream.client import AsyncClient
from ibstream.model import TickType
from tests.bus_record_fixtures import (
    Publisher,
    RecorderProcess,
    gap_rows,
    stored,
    tick_of_data,
)
from tests.conftest import Changes, ServerFactory
from tests.store_data import ES, sample_ticks

RUN = "a1b2c3d4e5f60718"  # a source run's server_id (16 characters, as the hub's)
FIELDS = ("price", "size", "bid_price", "bid_size", "ask_price", "ask_size", "exchange")


@pytest.fixture
def bus(tmp_path: Path):
    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def recorder(bus: NatsServer, tmp_path: Path):
    process = RecorderProcess(bus.url, tmp_path / "store", tmp_path / "recorder.log")
    try:
        yield process
    finally:
        process.kill()


class Got(Changes):
    def __init__(self) -> None:
        super().__init__()
        self.ticks: list[dict] = []

    def __call__(self, tick: dict) -> None:
        self.ticks.append(tick)
        self.notify()


async def test_the_store_holds_every_tick_a_client_received(
    make_server: ServerFactory, bus, recorder, tmp_path: Path
):
    server = await make_server()
    got = Got()
    async with AsyncClient(server.url) as client:
        await client.stream("ES", ("bid_ask", "last"), on_tick=got)
        await got.until(lambda: min(count(got.ticks, t) for t in ("bid_ask", "last")) >= 40)
    contract = await server.hub.resolve("ES")
    run = server.hub.server_id
    half = len(got.ticks) // 2
    async with Publisher(bus.url) as source:
        await source.create()
        await source.event(run, "source_started")
        for kind in ("bid_ask", "last"):
            first = min(t["sequence"] for t in got.ticks if t["tick_type"] == kind)
            await source.opened(run, contract, kind, first - 1)
        recorder.start()
        for i, data in enumerate(got.ticks):
            if i == half:  # IB lost and back: the window is a gap of both streams
                where = [[contract.contract_id, k, last(got.ticks[:i], k)] for k in TYPES]
                details = {"sequences": where}
                await source.event(run, "ib_disconnected", details=details)
                await source.event(run, "resumed", details=details)
            await source.tick(run, tick_of_data(data), data["sequence"])
        await source.wait_acked()
        assert source.resolves == 0  # the contract came with stream_opened
    assert recorder.terminate() == 0
    rows = {(r["tick_type"], r["sequence"]): r for r in stored(recorder.store)}
    assert len(rows) == len(got.ticks) == len(stored(recorder.store))
    for data in got.ticks:
        row = rows[(data["tick_type"], data["sequence"])]
        assert row["time"].value == data["recv_ns"] and row["server_id"] == run
        assert {f: row[f] for f in FIELDS if row[f] is not None} == {
            f: data[f] for f in FIELDS if f in data
        }
    frame = ibstream.store.open(recorder.store).ticks("ES")
    assert len(frame) == len(got.ticks)
    sql = ibstream.store.duckdb(recorder.store).sql(
        "SELECT count(*), count(DISTINCT sequence) FROM ticks WHERE tick_type = 'last'"
    )
    assert sql.fetchall()[0] == (count(got.ticks, "last"),) * 2
    gaps = gap_rows(recorder.store)
    assert sorted(g["tick_type"] for g in gaps) == ["bid_ask", "last"]
    for gap in gaps:
        assert gap["reason"] == "ib_disconnected" and gap["server_id"] == run
        assert gap["after_sequence"] == last(got.ticks[:half], gap["tick_type"])


async def test_kill_9_and_restart_lose_nothing_and_store_nothing_twice(bus, recorder):
    ticks = sample_ticks(ES, 3000)
    seqs: dict[TickType, int] = {}

    async def publish(source: Publisher) -> None:
        for i, tick in enumerate(ticks):
            seqs[tick.tick_type] = seqs.get(tick.tick_type, 0) + 1
            await source.tick(RUN, tick, seqs[tick.tick_type])
            if i % 25 == 0:
                await asyncio.sleep(0.02)  # pacing the load (~1,000 ticks/s), not a sync

    async with Publisher(bus.url) as source:
        await source.create()
        await source.event(RUN, "source_started")
        for kind in TYPES:
            await source.opened(RUN, ES, kind, 0)
        recorder.start()
        publishing = asyncio.create_task(publish(source))
        for _ in range(3):  # each time once it consumes: read, written, acknowledged or not
            await source.wait_acked(beyond=await source.acked() + 50)
            recorder.kill()
            recorder.start()
        await publishing
        await source.wait_acked()
    assert recorder.terminate() == 0
    rows = stored(recorder.store)
    for kind, top in seqs.items():
        mine = sorted(r["sequence"] for r in rows if r["tick_type"] == kind.value)
        assert mine == list(range(1, top + 1)), kind  # every one, once
    assert len(rows) == len(ticks) and gap_rows(recorder.store) == []
    log = recorder.text()
    assert log.count(f"resuming the recording of source run {RUN}") == 3
    assert "Traceback" not in log


async def test_a_restarted_source_is_a_new_run_and_a_gap_of_its_open_streams(bus, recorder):
    """A new server_id: its own parts; the old run's streams still open at its end get a
    `server_restarted` gap, a stream the old run closed gets none."""
    ticks = sample_ticks(ES, 600)
    new_run = "ffeeddccbbaa9988"
    ends: dict[str, dict[TickType, int]] = {}
    async with Publisher(bus.url) as source:
        await source.create()
        recorder.start()
        for run, part in ((RUN, ticks[:300]), (new_run, ticks[300:])):
            await source.event(run, "source_started")
            for kind in TYPES:
                await source.opened(run, ES, kind, 0)
            seqs = ends[run] = {}
            for tick in part:
                seqs[tick.tick_type] = seqs.get(tick.tick_type, 0) + 1
                await source.tick(run, tick, seqs[tick.tick_type])
            if run == RUN:
                closed = {"contract_id": ES.contract_id, "tick_type": "last"}
                await source.event(RUN, "stream_closed", **closed)
        await source.wait_acked()
    assert recorder.terminate() == 0
    rows = stored(recorder.store)
    for run, seqs in ends.items():
        for kind, top in seqs.items():
            mine = [
                r["sequence"] for r in rows if (r["server_id"], r["tick_type"]) == (run, kind.value)
            ]
            assert sorted(mine) == list(range(1, top + 1))
    (gap,) = gap_rows(recorder.store)
    assert (gap["reason"], gap["server_id"], gap["tick_type"]) == (
        "server_restarted",
        RUN,
        "bid_ask",
    )
    assert gap["after_sequence"] == ends[RUN][TickType.BID_ASK]
    old_tail = max(t.recv_ns for t in ticks[:300] if t.tick_type == TickType.BID_ASK)
    assert gap["start"].value == old_tail


async def test_messages_expired_before_the_recorder_read_them_are_a_gap(bus, recorder):
    ticks = [t for t in sample_ticks(ES) if t.tick_type == TickType.BID_ASK][:400]
    async with Publisher(bus.url) as source:
        await source.create(max_msgs=60)
        await source.event(RUN, "source_started")
        await source.opened(RUN, ES, "bid_ask", 0)  # expires too: the contract is asked for
        for seq, tick in enumerate(ticks[:200], 1):
            await source.tick(RUN, tick, seq)
        recorder.start()
        await source.wait_acked()
        assert recorder.terminate() == 0
        assert source.resolves >= 1
        first = stored(recorder.store)
        assert [r["sequence"] for r in first] == list(range(141, 201))
        (gap,) = gap_rows(recorder.store)
        assert (gap["reason"], gap["after_sequence"]) == ("bus_expired", 0)
        assert "sequences 1-140" in gap["message"]
        assert gap["end"].value == ticks[140].recv_ns
        for seq, tick in enumerate(ticks[200:], 201):  # the recorder away: 201-340 expire
            await source.tick(RUN, tick, seq)
        recorder.start()
        await source.wait_acked()
    assert recorder.terminate() == 0
    seqs = sorted(r["sequence"] for r in stored(recorder.store))
    assert seqs == [*range(141, 201), *range(341, 401)]
    gap = max(gap_rows(recorder.store), key=lambda g: g["after_sequence"])
    assert (gap["reason"], gap["after_sequence"]) == ("bus_expired", 200)
    assert "sequences 201-340" in gap["message"]
    assert gap["start"].value == ticks[199].recv_ns and gap["end"].value == ticks[340].recv_ns


TYPES = ("bid_ask", "last")


def count(ticks: list[dict], kind: str) -> int:
    return sum(1 for t in ticks if t["tick_type"] == kind)


def last(ticks: list[dict], kind: str) -> int:
    return max((t["sequence"] for t in ticks if t["tick_type"] == kind), default=0)
