"""`ibstream record --from-bus`: the tick store's recorder as its own process on the bus.

A real nats-server (JetStream), the `ibstream record` process, and a real source
(`serve --bus`, in-process, on the gateway simulator, also recording into its own store):
the recorder's store read back (pyarrow, DuckDB, `ibstream.store.open`) equals the source's
own recording row for row and holds every tick the source's client received, through an IB
drop and through three kill -9s of the recorder; what the bus no longer held (a 20 kB
stream) is a `bus_expired` gap naming the sequences. A source restart (two runs published
by hand with nats-py + ibstream.bus.wire) is a new run and a `server_restarted` gap of the
streams the old run left open.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import ibstream.store
from ibstream.bus import wire
from ibstream.bus.nats_server import NatsServer, free_port
from ibstream.gateway import GatewaySimulator
from ibstream.model import TickType
from tests.bus_fixtures import nats_server  # noqa: F401 (the fixture)
from tests.bus_record_fixtures import (
    Publisher,
    RecorderProcess,
    gap_rows,
    recording,
    stored,
)
from tests.conftest import AAPL, WAIT, ServerFactory, WSClient
from tests.store_data import ES, sample_ticks

RUN = "a1b2c3d4e5f60718"  # a source run's server_id (16 characters, as the hub's)
FIELDS = ("price", "size", "bid_price", "bid_size", "ask_price", "ask_size", "exchange")


@pytest.fixture
def bus(nats_server: NatsServer) -> NatsServer:  # noqa: F811 (the fixture, by name)
    return nats_server


@pytest.fixture
def recorder(bus: NatsServer, tmp_path: Path) -> Iterator[RecorderProcess]:
    with recording(bus.url, tmp_path) as process:
        yield process


async def test_the_store_equals_the_sources_own_recording_and_its_clients_ticks(
    make_server: ServerFactory, gateway: GatewaySimulator, ws_client, bus, recorder, tmp_path
):
    """A real source (`--bus`, also recording in-process into its own store) through an IB
    drop: the recorder's store equals the source's own, row for row, holds every tick its
    client received, and has the outage as the same gaps."""
    own = tmp_path / "own"
    server = await make_server(bus=bus.url, record=str(own), record_flush=0.1)
    recorder.start()
    client: WSClient = await ws_client(server)
    await client.subscribe(AAPL, list(TYPES))
    await client.ticks(40)
    await gateway.drop_connections()
    statuses = set()
    async with asyncio.timeout(WAIT):
        while "resumed" not in statuses:
            statuses.add((await client.expect("info"))["data"]["status"])
    await client.ticks(20)
    async with asyncio.timeout(WAIT):
        await server.stop()  # its last ticks and stream_closed go out before it ends
    async with Publisher(bus.url, control=False) as probe:
        await probe.wait_acked()
    assert await recorder.terminate() == 0
    # the source's own store may also hold the outage backfilled from IB's history (rows of
    # source "historical", sequence 0) if that finished before it stopped: not on the bus
    mine, theirs = by_stream(stored(recorder.store)), by_stream(live(stored(own)))
    assert {r["source"] for r in mine.values()} == {"live"}
    assert mine == theirs and len(mine) >= 60
    for tick in [m["data"] for m in client.seen if m["type"] == "tick"]:
        row = mine[(tick["tick_type"], tick["sequence"])]
        assert row["time"].value == tick["recv_ns"] and row["server_id"] == server.hub.server_id
        assert {f: row[f] for f in FIELDS if row[f] is not None} == {
            f: tick[f] for f in FIELDS if f in tick
        }
    frame = ibstream.store.open(recorder.store).ticks("AAPL")
    assert len(frame) == len(mine)
    query = "SELECT count(*), count(DISTINCT sequence) FROM ticks WHERE tick_type = 'last'"
    counted = ibstream.store.duckdb(recorder.store).sql(query).fetchall()[0]
    assert counted == (sum(1 for k in mine if k[0] == "last"),) * 2
    outages = [g for g in gap_rows(recorder.store) if g["reason"] == "ib_disconnected"]
    own_outages = [g for g in gap_rows(own) if g["reason"] == "ib_disconnected"]
    assert sorted(g["tick_type"] for g in outages) == ["bid_ask", "last"]
    assert {(g["tick_type"], g["after_sequence"]) for g in outages} == {
        (g["tick_type"], g["after_sequence"]) for g in own_outages
    }
    assert [g["reason"] for g in gap_rows(recorder.store)] == ["ib_disconnected"] * 2


async def test_kill_9_and_restart_lose_nothing_and_store_nothing_twice(
    make_server: ServerFactory, ws_client, bus, recorder, tmp_path
):
    """The recorder kill -9ed three times while a real source streams: its store still
    equals the source's own recording, row for row."""
    own = tmp_path / "own"
    server = await make_server(bus=bus.url, record=str(own), record_flush=0.1)
    client: WSClient = await ws_client(server)
    await client.subscribe(AAPL, list(TYPES))
    recorder.start()
    async with Publisher(bus.url, control=False) as probe:
        for _ in range(3):  # each time once it consumes: read, written, acknowledged or not
            await probe.wait_acked(beyond=await probe.acked() + 30)
            recorder.kill()
            recorder.start()
        await client.ticks(30)
        await server.stop()
        await probe.wait_acked()
    assert await recorder.terminate() == 0
    mine, theirs = by_stream(stored(recorder.store)), by_stream(stored(own))
    assert mine == theirs and len(mine) > 100
    for kind in TYPES:
        seqs = sorted(n for k, n in mine if k == kind)
        assert seqs == list(range(1, len(seqs) + 1))  # every one, once
    assert gap_rows(recorder.store) == []
    log = recorder.text()
    assert log.count("resuming the recording of source run") == 3
    assert "Traceback" not in log


async def test_a_restarted_source_is_a_new_run_and_a_gap_of_its_open_streams(bus, recorder):
    """A new server_id: its own parts; the old run's streams still open at its end get a
    `server_restarted` gap, a stream the old run closed gets none. Malformed messages are
    logged and skipped."""
    ticks = sample_ticks(ES, 600)
    new_run = "ffeeddccbbaa9988"
    ends: dict[str, dict[TickType, int]] = {}
    async with Publisher(bus.url) as source:
        await source.create()
        recorder.start()
        for run, part in ((RUN, ticks[:300]), (new_run, ticks[300:])):
            await source.begin(run, ES, TYPES)
            await source.ticks(run, part, ends.setdefault(run, {}))
            if run == RUN:
                closed = {"contract_id": ES.contract_id, "tick_type": "last"}
                await source.event(RUN, "stream_closed", **closed)
                await source.js.publish(wire.tick_subject(ES.contract_id, "last"), b"x" * 40)
                await source.js.publish(wire.event_subject(RUN), b'["not", "an", "event"]')
        await source.wait_acked()
    assert await recorder.terminate() == 0
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
    assert recorder.text().count("skipped a malformed bus message") == 2  # and went on
    # A second recorder (another durable) reads the whole bus again into the same store:
    # every tick and every gap is there already, so nothing is added.
    again = RecorderProcess(bus.url, recorder.store, recorder.log, durable="rec-again")
    try:
        again.start()
        async with Publisher(bus.url, control=False) as probe:
            await probe.wait_acked(durable="rec-again")
        assert await again.terminate() == 0
    finally:
        again.kill()
    assert sorted(map(by_key, stored(recorder.store))) == sorted(map(by_key, rows))
    assert [g["reason"] for g in gap_rows(recorder.store)] == ["server_restarted"]


async def test_what_the_bus_expired_before_the_recorder_read_it_is_a_gap(
    make_server: ServerFactory, ws_client, bus, recorder, tmp_path
):
    """A source whose bus keeps 10 kB of messages (a fraction of a second of ticks): the
    recorder starts late (the start expired, and with it stream_opened: the contract is asked
    of the source), then is away a while. Every sequence is stored once or named by a
    `bus_expired` gap, never both."""
    server = await make_server(bus=bus.url, bus_max_bytes=10_000)
    client: WSClient = await ws_client(server)
    await client.subscribe(AAPL, list(TYPES))
    await ticks_for(client, seconds=1.0)  # the first of them are gone from the bus
    recorder.start()
    async with Publisher(bus.url, control=False) as probe:
        await probe.wait_acked()  # caught up: each stream has ticks stored
        assert await recorder.terminate() == 0
        await ticks_for(client, seconds=1.0)  # the recorder away longer than the bus keeps
        recorder.start()
        await probe.wait_acked()
        await server.stop()
        await probe.wait_acked()
    assert await recorder.terminate() == 0
    rows, gaps = stored(recorder.store), gap_rows(recorder.store)
    assert {g["reason"] for g in gaps} == {"bus_expired"}
    for kind in TYPES:
        seqs = sorted(r["sequence"] for r in rows if r["tick_type"] == kind)
        holes = sorted(named(g) for g in gaps if g["tick_type"] == kind)
        assert holes[0][0] == 1 and len(holes) >= 2, holes  # the start, and while away
        covered = sorted([*seqs, *(n for lo, hi in holes for n in range(lo, hi + 1))])
        assert covered == list(range(1, seqs[-1] + 1)), kind  # each once: stored or a gap
        for gap in (g for g in gaps if g["tick_type"] == kind):
            after = next(
                r for r in rows if (r["tick_type"], r["sequence"]) == (kind, named(gap)[1] + 1)
            )
            assert gap["end"].value == after["time"].value
    assert "cannot learn contract" not in recorder.text()


TYPES = ("bid_ask", "last")


def by_key(row: dict) -> tuple[str, str, int]:
    return row["server_id"], row["tick_type"], row["sequence"]


def live(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["source"] == "live"]


def by_stream(rows: list[dict]) -> dict[tuple[str, int], dict]:
    return {(r["tick_type"], r["sequence"]): r for r in rows}


def named(gap: dict) -> tuple[int, int]:
    """The sequences a bus_expired gap names ("sequences 1-140 of ...")."""
    lo, hi = re.search(r"sequences (\d+)-(\d+)", gap["message"]).groups()
    return int(lo), int(hi)


async def ticks_for(client: WSClient, seconds: float) -> None:
    """Read ticks until they span `seconds` of the source's receive clock."""
    first = None
    async with asyncio.timeout(WAIT):
        while True:
            (msg,) = await client.ticks(1)
            first = first or msg["data"]["recv_ns"]
            if msg["data"]["recv_ns"] - first >= seconds * 1e9:
                return


async def test_the_bus_away_at_start_and_midway_loses_nothing(tmp_path: Path):
    """NATS not there at start: one log line, then recording once it is; NATS kill -9ed and
    started again on its store: the recorder reconnects and nothing is lost or twice."""
    bus = NatsServer(tmp_path / "nats", port=free_port())
    recorder = RecorderProcess(bus.url, tmp_path / "store", tmp_path / "recorder.log")
    ticks = sample_ticks(ES, 1200)
    seqs: dict[TickType, int] = {}

    async def publish(part: list) -> None:
        async with Publisher(bus.url) as source:
            if not seqs:
                await source.create()
                await source.begin(RUN, ES, TYPES)
            await source.ticks(RUN, part, seqs)
            await source.wait_acked()

    try:
        recorder.start()
        await recorder.wait_log("cannot reach the bus")
        bus.start()
        await publish(ticks[:600])
        bus.kill()
        await recorder.wait_log("lost the bus")
        bus.start()
        await publish(ticks[600:])
        assert await recorder.terminate() == 0
    finally:
        recorder.kill()
        bus.kill()
    rows = stored(recorder.store)
    for kind, top in seqs.items():
        mine = sorted(r["sequence"] for r in rows if r["tick_type"] == kind.value)
        assert mine == list(range(1, top + 1)), kind
    log = recorder.text()
    assert log.count("cannot reach the bus") == 1 and log.count("lost the bus") == 1


async def test_a_source_restarted_while_the_recorder_was_down(bus, recorder):
    """Killed with everything read acknowledged, the recorder finds its old run's marker at
    restart and the bus holding only a new run: the old run's open streams are gaps."""
    ticks = sample_ticks(ES, 400)
    new_run = "0011223344556677"
    ends: dict[str, dict[TickType, int]] = {}
    async with Publisher(bus.url) as source:
        await source.create()
        for run, part in ((RUN, ticks[:200]), (new_run, ticks[200:])):
            await source.begin(run, ES, TYPES)
            await source.ticks(run, part, ends.setdefault(run, {}))
            if run == RUN:
                recorder.start()
                await source.wait_acked()
                recorder.kill()
        recorder.start()
        await source.wait_acked()
    assert await recorder.terminate() == 0
    rows = stored(recorder.store)
    assert len(rows) == len(ticks) and len(set(map(by_key, rows))) == len(ticks)
    gaps = {g["tick_type"]: g for g in gap_rows(recorder.store)}
    assert sorted(gaps) == ["bid_ask", "last"]
    for kind, gap in gaps.items():
        assert (gap["reason"], gap["server_id"]) == ("server_restarted", RUN)
        assert gap["after_sequence"] == ends[RUN][TickType(kind)]
    assert "source run a1b2c3d4e5f60718 ended while no recorder read the bus" in recorder.text()


async def test_a_store_that_cannot_be_written_holds_the_bus_back(bus, recorder):
    """The store's directory gone: nothing further is acknowledged (the bus keeps it);
    back: everything is written, once, without a gap."""
    ticks = sample_ticks(ES, 600)
    seqs: dict[TickType, int] = {}
    async with Publisher(bus.url) as source:
        await source.create()
        await source.begin(RUN, ES, TYPES)
        recorder.start()
        await source.ticks(RUN, ticks[:300], seqs)
        await source.wait_acked()
        before = await source.acked()
        aside = recorder.store.with_name("store-aside")
        recorder.store.rename(aside)
        await source.ticks(RUN, ticks[300:], seqs)
        await recorder.wait_log("cannot write to the tick store")
        assert await source.acked() == before
        aside.rename(recorder.store)
        await source.wait_acked()
    assert await recorder.terminate() == 0
    rows = stored(recorder.store)
    for kind, top in seqs.items():
        mine = sorted(r["sequence"] for r in rows if r["tick_type"] == kind.value)
        assert mine == list(range(1, top + 1)), kind
    assert gap_rows(recorder.store) == []


def test_bad_record_options_are_one_line(tmp_path: Path):
    afile = tmp_path / "a-file"
    afile.write_text("not a directory")
    base = [sys.executable, "-m", "ibstream", "record"]
    cases = [
        (["--from-bus", "http://x:4222", "--to", str(tmp_path)], 2, "nats://HOST:4222"),
        (["--from-bus", "nats://127.0.0.1:1", "--to", str(afile)], 1, "not a directory"),
        (["--from-bus", "nats://127.0.0.1:1", "--to", str(tmp_path), "--record-flush", "0"], 2,
         "--record-flush"),
    ]  # fmt: skip
    for args, code, words in cases:
        done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == code, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in done.stderr
