"""A recording in a bucket: parts written to a real S3 endpoint (moto's server in a child
process) through pyarrow's S3 filesystem read back by `ibstream.store.open(s3://...)` exactly
as the same recording on a local disk: ticks, SQL views, sessions, compaction."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

import ibstream.store
from ibstream.store import StoreError, compact
from tests.s3_fixtures import S3Server, s3_server
from tests.store_data import record


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def both(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    local = tmp_path_factory.mktemp("local") / "rec"
    uri = s3.uri("recordings/rec")
    expected = record(local, flush=500)
    pd.testing.assert_frame_equal(record(uri, flush=500), expected)
    return ibstream.store.open(local), ibstream.store.open(uri)


def test_ticks_from_the_bucket_equal_the_local_recording(both):
    local, remote = both
    pd.testing.assert_frame_equal(remote.ticks(), local.ticks())
    pd.testing.assert_frame_equal(
        remote.ticks("ES", "last", start="2024-07-02"),
        local.ticks("ES", "last", start="2024-07-02"),
    )
    assert remote.ticks().attrs == local.ticks().attrs


def test_sql_and_sessions_from_the_bucket_equal_the_local_recording(both):
    local, remote = both
    query = (
        "SELECT date, contract_id, tick_type, count(*) n, min(time) first, max(time) last, "
        "sum(size) volume FROM ticks GROUP BY ALL ORDER BY ALL"
    )
    pd.testing.assert_frame_equal(remote.sql(query), local.sql(query))
    spread = "SELECT avg(ask_price - bid_price) s, count(*) n FROM quotes"
    pd.testing.assert_frame_equal(remote.sql(spread), local.sql(spread))
    pd.testing.assert_frame_equal(remote.sessions(), local.sessions())
    pd.testing.assert_frame_equal(remote.contracts(), local.contracts())


def test_compaction_in_the_bucket_keeps_every_row_once(s3: S3Server):
    uri = s3.uri("recordings/compacted")
    expected = record(uri, flush=300)
    report = compact.compact(uri)
    assert report.hours > 0 and not report.busy
    fs = s3.filesystem()
    from pyarrow.fs import FileSelector

    names = [
        i.base_name
        for i in fs.get_file_info(FileSelector(f"{s3.bucket}/recordings/compacted", recursive=True))
    ]
    assert not [n for n in names if n.startswith(".")]  # no merged file left aside
    pd.testing.assert_frame_equal(ibstream.store.open(uri).ticks(), expected)


def test_a_prefix_without_a_recording_is_one_error(s3: S3Server):
    with pytest.raises(StoreError, match="^NOT_A_RECORDING: "):
        ibstream.store.open(s3.uri("nothing/here"))


async def test_a_server_records_into_the_bucket_and_a_crash_is_a_gap(s3: S3Server):
    """`ibstream serve --record s3://...` (a real child process): what a client saw is in the
    bucket; after `kill -9` and a restart on the same prefix the crash window is in gaps."""
    from ibstream.gateway import GatewaySimulator
    from tests.client_fixtures import ServerProcess
    from tests.test_store_record import read_ticks

    uri = s3.uri("live/rec")
    async with GatewaySimulator(port=0, seed=5, rate=300.0, bursts=False) as gateway:
        server = ServerProcess(gateway.port)
        options = ["--record", uri, "--record-flush", "0.2"]
        seen: dict = {}
        try:
            await server.start(*options)
            crashed = await read_ticks(server.url, 1.5, seen)
            await server.kill()
            await server.start(*options)
            clean = await read_ticks(server.url, 1.0, seen)
            # the crash window of ES and AAPL, quotes and trades, filled from IB's history
            lines = await server.wait_log("backfill: gap", "server_restarted", count=4, timeout=60)
            assert await server.terminate() == 0
        finally:
            await server.kill()
    store = ibstream.store.open(uri)
    ticks = store.ticks()
    assert len(ticks) > 0
    # live rows are numbered by their server; backfilled ones (sequence 0) fill the crash window
    frame = store.sql(
        "SELECT server_id, contract_id, tick_type, sequence FROM ticks WHERE source = 'live'"
    )
    kept = set(frame.itertuples(index=False, name=None))
    assert len(kept) == len(frame), "a row stored twice"
    assert {(clean, *key) for key in seen[clean]} <= kept  # a clean stop keeps everything
    lost = [key for key in seen[crashed] if (crashed, *key) not in kept]
    assert len(lost) < len(seen[crashed])
    gaps = store.gaps()
    restarts = gaps[gaps["reason"] == "server_restarted"]
    assert set(restarts["server_id"]) == {crashed}
    assert all(": filled (" in line for line in lines), lines
    assert set(restarts["status"]) == {"filled"}
    filled = store.sql("SELECT contract_id, tick_type, time FROM ticks WHERE source = 'historical'")
    for row in filled.itertuples(index=False):
        window = restarts[
            (restarts["contract_id"] == row.contract_id) & (restarts["tick_type"] == row.tick_type)
        ]
        assert ((window["start"] <= row.time) & (row.time <= window["end"])).any()
    assert len(filled) > 0
