"""Backfill (`--backfill`, on with `--record`): a gap in a recording is filled from IB's
history so that the store holds every trade once, checked against ground truth.

An `ibstream serve --record` child process records ES trades from the real simulator; an
independent ib_insync client stays connected to the simulator the whole time and records
every trade it sends (the ground truth). The server is killed with SIGKILL, started again on
the same store, and the store's trades over the window must then equal the ground truth one
for one (IB second, price, size).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from ib_insync import IB

import ibstream.store
from ibstream.gateway import GatewaySimulator
from ibstream.model import TickType
from ibstream.store import fill, gaps, layout
from ibstream.store.replay.gaps import recorded_gaps
from tests.client_fixtures import ServerProcess
from tests.conftest import get_json
from tests.history_fixtures import ES_ID, HOST, GroundTruth

# the streams recorded, the ground truth's kind for each and the fields compared; IB's TRADES
# history is every trade, as AllLast is
STREAMS = {
    "all_last": ("TRADES", ["price", "size"]),
    "bid_ask": ("BID_ASK", ["bid_price", "ask_price", "bid_size", "ask_size"]),
}
OPTIONS = ["--record-flush", "0.2", "--record-contract", "ES:all_last,bid_ask"]


def stored_stream(store: Path, kind: str) -> pa.Table:
    table = layout.ticks_dataset(layout.open_root(store)).to_table(
        filter=(ds.field("contract_id") == ES_ID) & (ds.field("tick_type") == kind)
    )
    return table.sort_by("time")


def stream_keys(table: pa.Table, fields: list[str]) -> list[tuple]:
    seconds = [t // fill.NS for t in table["ib_time"].cast(pa.int64()).to_pylist()]
    return list(zip(seconds, *(table[f].to_pylist() for f in fields), strict=True))


def check_against_truth(
    store: Path, truth: GroundTruth, reason: str, gaps_made: int, since: int = 0
) -> None:
    """Each stream's ticks over the seconds the store spans (from IB second `since` on)
    equal the ground truth one for one, in IB-time order with distinct receive times, and
    each gap of `reason` is `filled`."""
    rows = ibstream.store.open(store).gaps()
    for kind, (what, fields) in STREAMS.items():
        table = stored_stream(store, kind)
        sources = Counter(table["source"].to_pylist())
        assert sources["historical"] > 0 and sources["live"] > 0, (kind, sources)
        keys = stream_keys(table, fields)
        first, last = max(keys[0][0] + 1, since), keys[-1][0] - 1  # whole seconds spanned
        mine = Counter(k for k in keys if first <= k[0] <= last)
        expected = Counter(r[: 1 + len(fields)] for r in truth.window(what, first, last + 1))
        assert sum(expected.values()) > 100, (kind, expected)
        assert mine == expected, (kind, mine - expected, expected - mine)
        times = table["time"].cast(pa.int64()).to_pylist()
        assert len(set(times)) == len(times), f"two {kind} rows share a receive time"
        assert [k[0] for k in keys] == sorted(k[0] for k in keys), f"{kind} not in IB-time order"
        mine_gaps = rows[(rows["reason"] == reason) & (rows["tick_type"] == kind)]
        assert list(mine_gaps["status"]) == ["filled"] * gaps_made, rows
        assert list(mine_gaps["revision"]) == [1] * gaps_made, rows
        every = rows[rows["tick_type"] == kind]
        assert int(every["ticks_added"].sum()) == sources["historical"], every


@contextlib.asynccontextmanager
async def recorded_market(
    seed: int, rate: float = 150.0
) -> AsyncIterator[tuple[GatewaySimulator, GroundTruth, int]]:
    """The simulator with the ground-truth client (its API client id too) connected."""
    truth_id = random.randint(1, 999)
    async with GatewaySimulator(port=0, seed=seed, rate=rate, bursts=False) as gateway:
        truth_ib = IB()
        await truth_ib.connectAsync(HOST, gateway.port, clientId=truth_id)
        try:
            truth = GroundTruth(truth_ib)
            await truth.subscribe()
            yield gateway, truth, truth_id
        finally:
            truth_ib.disconnect()


async def killed_for(
    server: ServerProcess, truth: GroundTruth, options: list[str], seconds: int
) -> None:
    """`kill -9` the server, let the market run `seconds` unrecorded, start it again on the
    same store; return once its `server_restarted` gaps (one per stream) are `filled`."""
    await server.kill()
    await truth.until_second(int(time.time()) + seconds)
    await server.start(*options)
    lines = await server.wait_log(
        "backfill: gap", "server_restarted", count=len(STREAMS), timeout=60
    )
    assert all("filled" in x and "partly" not in x for x in lines), lines


async def ib_outages(
    gateway: GatewaySimulator, server: ServerProcess, keep: int, count: int, seconds: float
) -> None:
    """`count` IB outages of the server (the simulator drops its connection, not the
    ground truth's `keep`, and refuses new sockets for `seconds`), each waited for until its
    `ib_disconnected` gaps are `filled`."""
    for outage in range(1, count + 1):
        gateway.refuse_connections(seconds)
        assert await gateway.drop_connections(keep={keep}) == 1
        lines = await server.wait_log(
            "backfill: gap", "ib_disconnected", count=len(STREAMS) * outage, timeout=60
        )
        assert all("filled" in x and "partly" not in x for x in lines), lines


async def test_a_killed_servers_gap_is_filled_from_history_one_for_one(tmp_path: Path):
    store = tmp_path / "store"
    options = ["--record", str(store), *OPTIONS]
    async with recorded_market(11) as (gateway, truth, _):
        server = ServerProcess(gateway.port)
        try:
            await server.start(*options)
            await truth.until_second(int(time.time()) + 2)  # the market moves on 2 s
            await killed_for(server, truth, options, 3)  # 3 s nobody records
            _, health = await get_json(server, "/health")  # type: ignore[arg-type]
            backfill = health["recording"]["backfill"]
            assert backfill["gaps"]["filled"] == 2 and backfill["ticks_added"] > 0, backfill
            await truth.until_second(int(time.time()) + 1)
            assert await server.terminate() == 0
        finally:
            await server.kill()
    check_against_truth(store, truth, "server_restarted", 1)


async def test_ib_outages_are_filled_from_history_one_for_one(tmp_path: Path):
    """The server loses its IB connection 3 times (the simulator drops it and refuses new
    sockets for 2 s); the ground-truth client keeps its own connection throughout."""
    store = tmp_path / "store"
    async with recorded_market(12) as (gateway, truth, truth_id):
        server = ServerProcess(gateway.port)
        try:
            await server.start("--record", str(store), *OPTIONS)
            await truth.until_second(int(time.time()) + 2)
            await ib_outages(gateway, server, truth_id, 3, 2.0)
            await truth.until_second(int(time.time()) + 1)
            assert await server.terminate() == 0
        finally:
            await server.kill()
    check_against_truth(store, truth, "ib_disconnected", 3)


async def test_a_gap_older_than_ibs_history_is_unfillable_with_ibs_reason(tmp_path: Path):
    """The simulator keeps only its last 20 events per kind: by the time the outage's gap
    is asked for, IB answers 162 "no data", and the gap says so."""
    store = tmp_path / "store"
    async with GatewaySimulator(port=0, seed=13, rate=150.0, history_limit=20) as gateway:
        server = ServerProcess(gateway.port)
        try:
            await server.start("--record", str(store), *OPTIONS)
            await server.wait_log("recording ES")  # both streams subscribed
            gateway.refuse_connections(1.0)
            assert await gateway.drop_connections() == 1
            lines = await server.wait_log("backfill: gap", "ib_disconnected", count=2, timeout=60)
            assert all("unfillable" in x for x in lines), lines
            assert await server.terminate() == 0
        finally:
            await server.kill()
    rows = ibstream.store.open(store).gaps()
    assert list(rows["status"]) == ["unfillable"] * 2, rows
    assert all("IB error 162" in m and "no data" in m for m in rows["message"]), rows
    assert list(rows["ticks_added"]) == [0, 0]
    for kind in STREAMS:
        assert Counter(stored_stream(store, kind)["source"].to_pylist()).keys() == {"live"}


def test_matching_is_by_count_within_a_second():
    """Two equal trades in one second, one stored live: one more is added, never two."""
    history = pa.table(
        {
            "time": [10, 10, 10, 11],
            "price": [5.0, 5.0, 5.25, 5.0],
            "size": [1.0, 1.0, 2.0, 1.0],
            "exchange": ["CME"] * 4,
            "conditions": [""] * 4,
        }
    )
    stored = Counter({(10, 5.0, 1.0): 1, (11, 5.0, 1.0): 1, (12, 9.0, 1.0): 1})
    rows = fill.missing(history, "TRADES", stored)
    assert [(r["time"], r["price"]) for r in rows] == [(10, 5.0), (10, 5.25)]


def test_an_edge_seconds_stored_ticks_are_matched_from_its_own_end():
    """A second the gap ends in: the ticks stored after the gap are IB's last of it, so an
    equal trade earlier in the second is the one missing (the order the tick test reads);
    at the gap's start the stored ones are the first of the second."""
    history = pa.table(
        {
            "time": [10, 10, 10],
            "price": [5.0, 6.0, 5.0],
            "size": [1.0, 1.0, 1.0],
            "exchange": ["CME"] * 3,
            "conditions": [""] * 3,
        }
    )
    tail = fill.missing(history, "TRADES", Counter(), Counter({(10, 5.0, 1.0): 1}))
    assert [r["price"] for r in tail] == [5.0, 6.0]  # the first 5.0 and the 6.0, in order
    head = fill.missing(history, "TRADES", Counter({(10, 5.0, 1.0): 1}), Counter())
    assert [r["price"] for r in head] == [6.0, 5.0]


def test_receive_times_stay_strictly_inside_the_gap_and_in_order():
    ns = fill.NS
    stamps = fill.receive_times([10, 10, 11, 13, 13], 10 * ns + 500, 13 * ns + 2)
    assert stamps == sorted(set(stamps))
    assert stamps[0] == 10 * ns + 501 and stamps[2] == 11 * ns
    assert stamps[-1] == 13 * ns + 1 and stamps[-2] == 13 * ns


def test_a_gap_reads_at_its_latest_revision_and_old_gap_files_still_read(tmp_path: Path):
    root = layout.open_root(tmp_path)
    old = gaps.row(ES_ID, "last", 1_000, 2_000, "ib_disconnected", "s1", 7)
    legacy = layout.GAP_SCHEMA.remove(layout.GAP_SCHEMA.get_field_index("revision"))
    legacy = legacy.remove(legacy.get_field_index("ticks_added"))
    path = tmp_path / layout.gap_dir("1970-01-01") / "old.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([old], schema=legacy), path)
    gaps.write(root, "s2", [gaps.revised(old, "filled", "filled from IB's history", 3, 2_500)])
    frame = ibstream.store.open(tmp_path).gaps()
    assert len(frame) == 1
    assert frame["status"].iloc[0] == "filled" and frame["end"].iloc[0].value == 2_500
    assert recorded_gaps(root, ES_ID, 0, None) == {}  # a replay tells no filled gap
    gaps.write(root, "s1", [gaps.row(ES_ID, "last", 3_000, 4_000, "ib_disconnected", "s1", 9)])
    assert [g["start"] for g in recorded_gaps(root, ES_ID, 0, None)[TickType.LAST]] == [3_000]
