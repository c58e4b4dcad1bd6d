"""Recording (`--record`): every tick a server streams lands in the tick store, once, and
what a crash loses is exactly the tail after the last flush, reported in `gaps`.

Real servers (in-process and `ibstream serve` child processes killed with SIGKILL), the real
simulator, real WebSocket clients; the store is read back by pyarrow and DuckDB.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import orjson
import psutil
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import websockets

from ibstream.gateway import GatewaySimulator
from ibstream.store import layout
from tests.client_fixtures import ServerProcess
from tests.conftest import AAPL, WAIT, ServerFactory, WSClient, get_json

ES = 637533641
STREAMS = [(ES, "bid_ask"), (ES, "last"), (AAPL, "bid_ask"), (AAPL, "last")]
Seen = dict[tuple[int, str, int], int]  # (contract_id, tick_type, sequence) -> recv_ns


def stored(store: Path) -> list[dict]:
    table = layout.ticks_dataset(layout.open_root(store)).to_table()
    return table.select(["server_id", "contract_id", "tick_type", "sequence", "time"]).to_pylist()


def gap_rows(store: Path) -> list[dict]:
    if not (store / layout.GAPS).exists():
        return []
    return layout.gaps_dataset(layout.open_root(store)).to_table().to_pylist()


def every_file_opens(store: Path) -> int:
    """Each Parquet file under the store opens in pyarrow and in DuckDB; how many there are."""
    files = sorted(store.rglob("*.parquet"))
    for path in files:
        rows = pq.read_table(path).num_rows
        assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0][0] == rows
    assert not list(store.rglob("*.tmp")), "a half-written file outlived the restart"
    return len(files)


async def read_ticks(url: str, seconds: float, seen: dict[str, Seen]) -> str:
    """Subscribe to ES and AAPL (quotes and trades, batched) and note every tick for
    `seconds`; the server's id."""
    ws_url = url.replace("http", "ws") + "/v2/ws/stream"
    async with websockets.connect(ws_url, max_size=None) as conn:
        greeting = orjson.loads(await conn.recv())
        server_id = greeting["data"]["server_id"]
        ticks = seen.setdefault(server_id, {})
        for n, contract in enumerate((ES, AAPL)):
            request = {"contract_id": contract, "tick_types": ["bid_ask", "last"]}
            request["config"] = {"batch_ms": 20}
            await conn.send(orjson.dumps({"type": "subscribe", "id": f"s{n}", "data": request}))
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = orjson.loads(await asyncio.wait_for(conn.recv(), left))
            except TimeoutError:
                break
            items = message["data"]["ticks"] if message["type"] == "ticks" else []
            if message["type"] == "tick":
                items = [message["data"]]
            for item in items:
                tick = item.get("data", item)
                key = (tick["contract_id"], tick["tick_type"], tick["sequence"])
                ticks[key] = tick["recv_ns"]
        return server_id


async def test_kill_9_five_times_while_recording_loses_only_the_last_flush(tmp_path: Path):
    """The issue's acceptance run: ES + AAPL at 5,000 ticks/s recorded by `ibstream serve`,
    killed with SIGKILL 5 times at random moments and started again on the same store."""
    store, flush = tmp_path / "store", 0.5
    rng = random.Random(12)
    async with GatewaySimulator(port=0, seed=3, rate=2500.0, bursts=False) as gateway:
        server = ServerProcess(gateway.port)
        options = ["--record", str(store), "--record-flush", str(flush)]
        options.append("--no-backfill")  # what the recorder loses (test_backfill fills it)
        options += ["--record-contract", "ES", "--record-contract", "AAPL"]
        seen: dict[str, Seen] = {}
        crashed: list[str] = []
        try:
            for run in range(6):
                await server.start(*options)
                server_id = await read_ticks(server.url, rng.uniform(1.5, 8.0), seen)
                if run < 5:
                    await server.kill()
                    crashed.append(server_id)
                else:
                    assert await server.terminate() == 0
        finally:
            await server.kill()
    assert every_file_opens(store) > 0
    rows = stored(store)
    keys = [(r["server_id"], r["contract_id"], r["tick_type"], r["sequence"]) for r in rows]
    assert len(keys) == len(set(keys)), "a row is stored twice"
    by_run: dict[str, dict[tuple[int, str, int], int]] = {}
    for r in rows:
        by_run.setdefault(r["server_id"], {})[(r["contract_id"], r["tick_type"], r["sequence"])] = (
            r["time"].value
        )
    gaps = gap_rows(store)
    restarted = [g for g in gaps if g["reason"] == "server_restarted"]
    assert sorted({g["server_id"] for g in restarted}) == sorted(crashed)
    assert len(restarted) == len(crashed) * len(STREAMS)  # one per stream and crash
    lost_total = 0
    for server_id, ticks in seen.items():
        kept = by_run.get(server_id, {})
        missing = {key: ns for key, ns in ticks.items() if key not in kept}
        if server_id not in crashed:
            assert not missing, "a clean stop must keep every tick"
            continue
        lost_total += len(missing)
        for (con_id, kind, seq), ns in missing.items():
            # what a crash loses is the stream's tail after its last flush: nothing before it
            last_kept = max((s for (c, k, s) in kept if (c, k) == (con_id, kind)), default=0)
            assert seq > last_kept
            gap = next(
                g
                for g in restarted
                if g["server_id"] == server_id
                and (g["contract_id"], g["tick_type"]) == (con_id, kind)
            )
            assert gap["start"].value < ns <= gap["end"].value
            assert gap["after_sequence"] == (last_kept or None)  # the run's last tick on disk
            if last_kept:
                assert gap["start"].value == kept[(con_id, kind, last_kept)]
    assert sum(len(t) for t in seen.values()) > 10 * lost_total  # most of what was seen is kept
    print(f"seen {sum(len(t) for t in seen.values())} ticks over 6 runs, {lost_total} lost")
    await replay_equals_the_recording(store)


async def replay_equals_the_recording(store: Path) -> None:
    """The recording of six server runs, replayed through both transports, is the stored
    frame in order; sequences run on contiguously across the runs (each run numbered from 1,
    replay continues them) and the crash windows come as recorded gaps."""
    import pandas as pd

    import ibstream
    import ibstream.store
    from tests.replay_fixtures import replay_server

    recorded = ibstream.store.open(store).ticks(["ES", "AAPL"])
    server = await replay_server(store, speed=None)
    try:
        for transport in ("websocket", "sse"):
            async with ibstream.AsyncClient(server.url, transport=transport) as client:
                replayed = await client.collect(
                    ["ES", "AAPL"], seconds=600, progress=False, batch_ms=20
                )
            pd.testing.assert_frame_equal(
                replayed.drop(columns="sequence"), recorded.drop(columns="sequence")
            )
            for _, stream in replayed.groupby(["contract_id", "tick_type"], observed=True):
                assert (stream["sequence"].diff().dropna() == 1).all()
    finally:
        await server.stop()


async def test_a_clean_stop_keeps_every_tick_a_client_saw(
    make_server: ServerFactory, ws_client, tmp_path: Path
):
    store = tmp_path / "rec"
    server = await make_server(record=str(store), record_flush=0.2)
    client: WSClient = await ws_client(server)
    await client.subscribe(AAPL, ["bid_ask", "last"])
    got = await client.ticks(300)
    await server.stop()
    rows = {(r["contract_id"], r["tick_type"], r["sequence"]): r for r in stored(store)}
    for message in got:
        tick = message["data"]
        row = rows[(tick["contract_id"], tick["tick_type"], tick["sequence"])]
        assert row["time"].value == tick["recv_ns"]
        assert row["server_id"] == server.hub.server_id
    assert not list((store / layout.STATE).glob("recorder-*")), "a clean stop leaves no marker"
    assert gap_rows(store) == []
    table = pads.dataset(store / "ticks", partitioning="hive").to_table()
    assert set(table.column("symbol").to_pylist()) == {"AAPL"}
    assert set(table.column("source").to_pylist()) == {"live"}
    meta = layout.read_file_metadata(pq.read_schema(next(store.rglob("*.parquet"))))
    assert meta["contract"]["contract_id"] == AAPL and meta["format"] == layout.FORMAT_VERSION


async def test_record_contract_records_with_no_client(
    make_server: ServerFactory, gateway: GatewaySimulator, tmp_path: Path
):
    store = tmp_path / "kept"
    server = await make_server(record=str(store), record_flush=0.1, record_contracts=("AAPL:last",))
    await gateway.wait_for(lambda: server.hub.ticks_in >= 50)  # no client ever came
    await server.stop()
    rows = stored(store)
    assert rows and {(r["contract_id"], r["tick_type"]) for r in rows} == {(AAPL, "last")}
    seqs = sorted(r["sequence"] for r in rows)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_a_vanished_directory_is_reported_and_streaming_goes_on(
    make_server: ServerFactory, ws_client, tmp_path: Path
):
    store = tmp_path / "gone"
    server = await make_server(record=str(store), record_flush=0.1)
    client: WSClient = await ws_client(server)
    await client.subscribe(AAPL, ["bid_ask"])
    await client.ticks(20)
    shutil.rmtree(store)
    failed = await client.expect("info")
    while failed["data"]["status"] != "record_failed":
        failed = await client.expect("info")
    assert "gone" in failed["data"]["message"]
    status, body = await get_json(server, "/health")
    assert status == 503 and body["recording"]["ok"] is False and body["ib"]["connected"]
    during = await client.ticks(50)  # live streaming did not stop
    assert not (store.exists()), "the recorder must not create a vanished store again"
    store.mkdir()
    resumed = await client.expect("info")
    assert resumed["data"]["status"] == "record_resumed"
    status, body = await get_json(server, "/health")
    assert status == 200 and body["recording"]["ok"] is True
    await server.stop()
    kept = {r["sequence"] for r in stored(store)}
    assert {m["data"]["sequence"] for m in during} <= kept  # they waited in memory, not lost


async def test_a_full_disk_is_reported_then_recording_catches_up(
    gateway: GatewaySimulator, tmp_path: Path
):
    """RLIMIT_FSIZE 0 on the server process makes every file write fail (EFBIG) as a full
    disk does (ENOSPC); raising it again is the disk freed."""
    store = tmp_path / "full"
    server = ServerProcess(gateway.port)
    await server.start("--record", str(store), "--record-flush", "0.1")
    try:
        client = WSClient(
            await websockets.connect(server.url.replace("http", "ws") + "/v2/ws/stream")
        )
        await client.expect("connected")
        await client.subscribe(AAPL, ["bid_ask"])
        await client.ticks(20)
        process = psutil.Process(server.proc.pid)
        process.rlimit(psutil.RLIMIT_FSIZE, (0, psutil.RLIM_INFINITY))
        status = (await client.expect("info"))["data"]["status"]
        assert status == "record_failed"
        during = await client.ticks(50)
        process.rlimit(psutil.RLIMIT_FSIZE, (psutil.RLIM_INFINITY, psutil.RLIM_INFINITY))
        assert (await client.expect("info"))["data"]["status"] == "record_resumed"
        await client.close()
        assert await server.terminate() == 0
        assert sum("cannot write to the tick store" in line for line in server.log) == 1
    finally:
        await server.kill()
    kept = {r["sequence"] for r in stored(store)}
    assert {m["data"]["sequence"] for m in during} <= kept


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--record", "{file}"], "is a file"),
        (["--record", "/proc/ibstream-test/rec"], "cannot record to /proc/ibstream-test/rec"),
        (["--record-contract", "ES"], "needs --record"),
        (["--record", "{dir}", "--record-flush", "0"], "above 0"),
        (["--record", "{dir}", "--record-contract", "ES:bogus,last"], "unknown tick type"),
    ],
)
def test_bad_recording_options_get_one_line_and_touch_nothing(
    tmp_path: Path, args: list[str], says: str
):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("not a store")
    argv = [a.format(file=a_file, dir=tmp_path / "new") for a in args]
    result = subprocess.run(
        [sys.executable, "-m", "ibstream", "serve", "--port", "0", "--ib-port", "1", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert says in result.stderr and "Traceback" not in result.stderr
    assert a_file.read_text() == "not a store" and not (tmp_path / "new").exists()


async def test_an_ib_outage_is_a_gap_of_every_recorded_stream(
    make_server: ServerFactory, gateway: GatewaySimulator, ws_client, tmp_path: Path
):
    store = tmp_path / "outage"
    server = await make_server(record=str(store), record_flush=0.1)
    client: WSClient = await ws_client(server)
    await client.subscribe(AAPL, ["bid_ask", "last"])
    await client.ticks(20)
    await gateway.drop_connections()
    statuses = set()
    while "resumed" not in statuses:
        statuses.add((await client.expect("info"))["data"]["status"])
    assert "ib_disconnected" in statuses
    await client.ticks(5)
    await server.stop()
    gaps = [g for g in gap_rows(store) if g["reason"] == "ib_disconnected"]
    assert sorted(g["tick_type"] for g in gaps) == ["bid_ask", "last"]
    rows = stored(store)
    for gap in gaps:
        times = [r["time"].value for r in rows if r["tick_type"] == gap["tick_type"]]
        assert gap["start"].value < gap["end"].value
        assert not [t for t in times if gap["start"].value < t < gap["end"].value]


def test_ensure_server_and_run_server_start_a_recording_server(tmp_path: Path):
    """The background server takes the recording keys: from `ensure_server` (notebooks) and
    from a TOML config through `run_server.py start`; a clean stop leaves the ticks on disk."""
    import httpx

    from ibstream.server.launch import ensure_server
    from tests.client_fixtures import free_port

    store = tmp_path / "bg"
    info = ensure_server(
        f"http://127.0.0.1:{free_port()}",
        start=True,
        demo=True,
        record=store,
        record_contracts=["ES:last"],
    )
    try:
        recording = httpx.get(info.url + "/health", timeout=WAIT).json()["recording"]
        assert recording["store"] == str(store.resolve())
        assert recording["record_contracts"] == ["ES:last"]
    finally:
        assert info.stop()
    assert not list((store / layout.STATE).glob("recorder-*"))
    config = tmp_path / "rec.toml"
    port = free_port()
    config.write_text(
        f'port = {port}\ndemo = true\nrecord = "{tmp_path / "toml"}"\nrecord_flush = 0.2\n'
        'record_contract = ["AAPL:bid_ask", "ES:last"]\n'
    )
    script = [sys.executable, "server/run_server.py"]
    started = subprocess.run(
        [*script, "start", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    try:
        assert started.returncode == 0, started.stderr
        body = httpx.get(f"http://127.0.0.1:{port}/health", timeout=WAIT).json()
        assert body["recording"]["record_contracts"] == ["AAPL:bid_ask", "ES:last"]
        assert body["recording"]["flush_seconds"] == 0.2
    finally:
        subprocess.run([*script, "stop", "--port", str(port)], capture_output=True, timeout=60)


async def test_a_recording_server_compacts_the_hours_that_ended(
    make_server: ServerFactory, tmp_path: Path
):
    """Parts a crashed run left of an hour that is over become one file when a server
    starts recording on the store again, rows in order, none twice."""
    from ibstream.model import ContractInfo, Tick, TickType
    from ibstream.store import parts

    store = tmp_path / "old"
    root = layout.open_root(store)
    contract = ContractInfo(AAPL, "AAPL", "STK", "SMART", "USD")
    hour_ago = (time.time_ns() // 3_600_000_000_000 - 2) * 3_600_000_000_000
    for n in range(3):
        ticks = [
            Tick(AAPL, TickType.LAST, hour_ago + (n * 100 + i) * 1_000_000, price=1.0 + i, size=1)
            for i in range(100)
        ]
        seqs = range(n * 100 + 1, n * 100 + 101)
        for part in parts.build_parts(contract, "last", ticks, seqs, "crashed"):
            parts.write_part(root, part, "crashed", contract.to_dict())
    assert len(list(store.rglob("*.parquet"))) == 3
    server = await make_server(record=str(store))
    recorder = server.context.recording.recorder
    await recorder._compacting  # started with the recording
    files = list(store.rglob("*.parquet"))
    assert len(files) == 1
    assert pq.read_table(files[0]).column("sequence").to_pylist() == list(range(1, 301))


async def test_a_crash_between_parts_and_marker_still_gets_an_exact_gap(
    make_server: ServerFactory, tmp_path: Path
):
    """A run killed after writing parts but before rewriting its marker: the gap starts at
    the last tick on disk (not the marker's older one), and a stream the marker never named
    gets its gap too."""
    from ibstream.model import ContractInfo, Tick, TickType
    from ibstream.store import parts, state

    store = tmp_path / "lagging"
    root = layout.open_root(store)
    contract = ContractInfo(AAPL, "AAPL", "STK", "SMART", "USD")
    start = time.time_ns() - 5_000_000_000
    for kind, first_field in ((TickType.LAST, "price"), (TickType.BID_ASK, "bid_price")):
        ticks = [Tick(AAPL, kind, start + i * 1000, **{first_field: 1.0}) for i in range(300)]
        for part in parts.build_parts(contract, kind.value, ticks, range(1, 301), "dead"):
            parts.write_part(root, part, "dead", contract.to_dict())
    gone = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await gone.wait()  # a pid whose process is over: the run it names crashed
    marker = state.RunMarker("dead", start, pid=gone.pid)
    marker.streams["x"] = state.StreamMark(AAPL, "last", start + 99_000, 100)  # one flush behind
    state.save(root, marker)
    server = await make_server(record=str(store))
    await server.stop()
    gaps = {g["tick_type"]: g for g in gap_rows(store) if g["server_id"] == "dead"}
    assert sorted(gaps) == ["bid_ask", "last"]
    for gap in gaps.values():
        assert gap["after_sequence"] == 300 and gap["start"].value == start + 299_000
        assert gap["reason"] == "server_restarted"
    assert not list((store / layout.STATE).glob("recorder-dead*"))
