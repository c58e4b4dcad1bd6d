"""Replay through the live endpoints: a recording of real streamed ticks served by
`start_replay_server` at full speed (unless a test says otherwise) to real clients over
WebSocket and SSE gives back exactly the recorded frame, in recorded order."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Iterator

import pandas as pd
import pyarrow.fs as pafs
import pytest
from moto.server import ThreadedMotoServer

import ibstream
import ibstream.store
from ibstream.store import layout
from tests.client_fixtures import free_port
from tests.conftest import WAIT, get_json, sse, sse_events
from tests.replay_fixtures import (  # the fixtures too: recording, small_batches
    Recorded,
    recording_fixture,  # noqa: F401
    replay_server,
    small_batches_fixture,  # noqa: F401
    threaded_replay,
    with_recorded_gaps,
    write_recording,
)


def sequences_contiguous(frame: pd.DataFrame) -> bool:
    return all(
        (group["sequence"].diff().dropna() == 1).all()
        for _, group in frame.groupby("tick_type", observed=True)
    )


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_collect_gives_back_exactly_the_recorded_frame(recording, small_batches, transport):
    es, aapl = recording.id_of("ES"), recording.id_of("AAPL")
    with threaded_replay(recording.path, speed=None) as server:
        with ibstream.Client(server.url, transport=transport) as client:
            one = client.collect("ES", progress=False)
            both = client.collect(["ES", "AAPL"], progress=False, batch_ms=5)
    pd.testing.assert_frame_equal(one, recording.frame(es))  # in order, as recorded
    assert sequences_contiguous(one)
    expected = ticks_frame_of(recording, [es, aapl])
    pd.testing.assert_frame_equal(both, expected)
    assert {c["symbol"] for c in both.attrs["contracts"]} == {"ES", "AAPL"}


def ticks_frame_of(recording: Recorded, contract_ids: list[int]) -> pd.DataFrame:
    from ibstream.client.frames import ticks_to_frame

    rows = [r for c in contract_ids for r in recording.of(c)]
    return ticks_to_frame(sorted(rows, key=lambda r: r["recv_ns"]))


async def test_a_late_client_gets_the_whole_session_too(recording, ws_client):
    es = recording.id_of("ES")
    server = await replay_server(recording.path, speed=2.0)
    try:
        early = await ws_client(server)
        await early.subscribe("ES", ["bid_ask", "last"])
        await early.ticks(20)  # the replay is under way
        late = await ws_client(server)
        sub = await late.subscribe("ES", ["bid_ask", "last"], batch_ms=20)
        assert [s["start_sequence"] for s in sub["streams"]] == [0, 0]
        got = await ticks_until_complete(late, 2, timeout=WAIT * 2)
    finally:
        await server.stop()
    assert got == recording.of(es)


def without(item: dict, *keys: str) -> dict:
    return {k: v for k, v in item.items() if k not in keys}


async def ticks_until_complete(client, streams: int, timeout: float = WAIT) -> list[dict]:
    """Tick data (single and batched items as data) until `streams` streams completed; asserts each
    ended with info then complete, both replay_completed."""
    got: list[dict] = []
    last_info: dict[str, str] = {}
    done = 0
    async with asyncio.timeout(timeout):
        while done < streams:
            msg = await client.recv(timeout)
            if msg["type"] == "tick":
                got.append(msg["data"])
            elif msg["type"] == "ticks":  # each item: the tick's data, its stream and stamp
                got += [without(item, "stream_id", "timestamp") for item in msg["data"]["ticks"]]
            elif msg["type"] == "info":
                last_info[msg["stream_id"]] = msg["data"]["status"]
            elif msg["type"] == "complete":
                assert msg["data"]["reason"] == "replay_completed", msg
                assert last_info.get(msg["stream_id"]) == "replay_completed", msg
                done += 1
    return got


async def test_resume_mid_replay_continues_after_the_positions(recording, ws_client):
    es = recording.id_of("ES")
    rows = recording.of(es)
    server = await replay_server(recording.path, speed=None)
    try:
        first = await ws_client(server)
        await first.subscribe("ES", ["bid_ask", "last"])
        head = [m["data"] for m in await first.ticks(len(rows) // 3)]
        await first.close()
        positions = {}
        for tick in head:
            positions[tick["tick_type"]] = tick["sequence"]
        second = await ws_client(server)
        sub = await second.subscribe("ES", ["bid_ask", "last"], resume_from=positions)
        starts = {s["tick_type"]: s["start_sequence"] for s in sub["streams"]}
        assert starts == positions
        tail = await ticks_until_complete(second, 2)
        query = ",".join(f"{t}:{n}" for t, n in positions.items())
        path = f"/v2/stream/ES?tick_types=bid_ask,last&resume_from={query}"
        async with sse(server, path) as source:
            events = [(event, data) async for event, data, _ in sse_events(source)]
    finally:
        await server.stop()
    assert head + tail == rows
    sse_ticks = [d["data"] for e, d in events if e == "tick"]
    assert sse_ticks == tail
    assert [d["data"]["reason"] for e, d in events if e == "complete"] == ["replay_completed"] * 2


async def test_limit_and_batches_behave_as_live(recording, ws_client):
    server = await replay_server(recording.path, speed=None)
    try:
        client = await ws_client(server)
        await client.subscribe("AAPL", ["bid_ask"], limit=150, batch_ms=5)
        complete = await client.expect("complete")
        frames = [m for m in client.seen if m["type"] == "ticks"]
    finally:
        await server.stop()
    assert complete["data"]["reason"] == "limit_reached"
    assert complete["data"]["total_ticks"] == 150
    items = [item for frame in frames for item in frame["data"]["ticks"]]
    assert [i["sequence"] for i in items] == list(range(1, 151))
    assert not [m for m in client.seen if m["type"] == "info"]  # no replay_completed


async def test_sse_ends_each_stream_with_replay_completed(recording):
    aapl = recording.id_of("AAPL")
    server = await replay_server(recording.path, speed=None)
    try:
        async with sse(server, "/v2/stream/AAPL?tick_types=bid_ask,last&batch_ms=5") as source:
            events = [(event, data) async for event, data, _ in sse_events(source)]
    finally:
        await server.stop()
    kinds = [e for e, _ in events]
    assert kinds[0] == "subscribed" and kinds[-1] == "complete"
    items = [i for e, d in events if e == "ticks" for i in d["data"]["ticks"]]
    assert [(i["tick_type"], i["sequence"]) for i in items] == [
        (r["tick_type"], r["sequence"]) for r in recording.of(aapl)
    ]
    tail = [(e, d["data"].get("status") or d["data"].get("reason")) for e, d in events[-4:]]
    assert sorted(tail) == sorted(
        [("info", "replay_completed"), ("complete", "replay_completed")] * 2
    )


async def test_start_in_the_subscribe_replays_from_that_time(recording, ws_client):
    es = recording.id_of("ES")
    rows = recording.of(es)
    middle = rows[len(rows) // 2]
    server = await replay_server(recording.path, speed=None)
    try:
        client = await ws_client(server)
        sub = await client.subscribe("ESZ6", ["bid_ask", "last"], start=middle["recv_ns"])
        got = await ticks_until_complete(client, 2)
        status, schema = await get_json(server, "/v2/schema")
    finally:
        await server.stop()
    assert got == [r for r in rows if r["recv_ns"] >= middle["recv_ns"]]
    starts = {s["tick_type"]: s["start_sequence"] for s in sub["streams"]}
    for tick_type, start in starts.items():  # the sequence before each stream's first tick
        assert start == next(r["sequence"] for r in got if r["tick_type"] == tick_type) - 1
    assert sub["config"]["start"].endswith("Z")
    assert status == 200 and "start" in schema["$defs"]["SubscribeConfig"]["properties"]


async def test_a_live_server_refuses_start(server, ws_client):
    client = await ws_client(server)
    data = {
        "contract_id": "ES",
        "tick_types": ["last"],
        "config": {"start": "2026-12-07T14:30:00Z"},
    }
    reply = await client.request("subscribe", data)
    assert reply["type"] == "error" and reply["data"]["code"] == "INVALID_MESSAGE"
    assert "replay" in reply["data"]["message"]


async def test_contract_lookup_health_and_unknown_contracts(recording, ws_client):
    server = await replay_server(recording.path, speed=None)
    try:
        client = await ws_client(server)
        reply = await client.request("subscribe", {"contract_id": "NQ", "tick_types": ["last"]})
        status, body = await get_json(server, "/v2/stream/MNQ/last")
        health_status, health = await get_json(server, "/health")
        found_status, found = await get_json(server, "/v2/contracts?symbol=ES")
        await client.subscribe(recording.id_of("AAPL"), ["mid_point"])  # never recorded
        info = await client.expect("info")
        complete = await client.expect("complete")
    finally:
        await server.stop()
    assert reply["type"] == "error" and reply["data"]["code"] == "CONTRACT_NOT_FOUND"
    assert status == 404 and body["error"]["code"] == "CONTRACT_NOT_FOUND"
    assert health_status == 200 and health["status"] == "ok"
    assert health["ib"]["replay"]["speed"] == "max"
    assert found_status == 200 and [c["local_symbol"] for c in found] == ["ESZ6"]
    assert info["data"]["status"] == "replay_completed" and info["data"]["details"]["ticks"] == 0
    assert "no mid_point ticks of AAPL" in info["data"]["message"]
    assert complete["data"]["reason"] == "replay_completed"


async def test_a_resume_beyond_the_recording_replays_from_the_start(recording, ws_client):
    aapl = recording.id_of("AAPL")
    rows = recording.of(aapl, ("last",))
    server = await replay_server(recording.path, speed=None)
    try:
        client = await ws_client(server)
        sub = await client.subscribe("AAPL", ["last"], resume_from=10**9)
        gap = await client.expect("info", status="gap")
        got = await ticks_until_complete(client, 1)
    finally:
        await server.stop()
    assert gap["data"]["details"]["reason"] == "unknown_sequence"
    assert gap["data"]["details"]["last_sequence"] == rows[-1]["sequence"]
    assert sub["streams"][0]["start_sequence"] == 0
    assert got == rows


def lateness(recv: list[int]) -> int:
    """How far behind, in recorded time, ticks arrived after a tick recorded later (summed)."""
    seen, behind = 0, 0
    for ns in recv:
        behind += max(0, seen - ns)
        seen = max(seen, ns)
    return behind


async def two_sessions(recording: Recorded, ws_client, speed: float | None, end: int) -> list:
    server = await replay_server(recording.path, speed=speed, end_ns=end)
    try:
        client = await ws_client(server)
        for spec in ("ES", "AAPL"):
            data = {"contract_id": spec, "tick_types": ["bid_ask", "last"]}
            await client.send({"type": "subscribe", "data": data})
        return await ticks_until_complete(client, 4, timeout=WAIT * 2)
    finally:
        await server.stop()


async def test_paced_sessions_keep_their_recorded_offsets(recording, ws_client):
    """Two subscribes (ES and AAPL) on one connection run on their own clocks from one start:
    paced, their ticks interleave as recorded; at full speed each runs a slice ahead of the
    other. Checked by order only: how far behind in recorded time ticks arrive, as a ratio
    of the two runs."""
    rows = sorted((r for s in recording.rows.values() for r in s), key=lambda r: r["recv_ns"])
    end = rows[0]["recv_ns"] + (rows[-1]["recv_ns"] - rows[0]["recv_ns"]) // 3
    window = [r["recv_ns"] for r in rows if r["recv_ns"] < end]
    fast = await two_sessions(recording, ws_client, None, end)
    paced = await two_sessions(recording, ws_client, 0.5, end)
    for got in (fast, paced):
        assert sorted(r["recv_ns"] for r in got) == window
    fast_behind = lateness([r["recv_ns"] for r in fast])
    assert fast_behind > 0
    assert lateness([r["recv_ns"] for r in paced]) < fast_behind / 10


async def test_two_recorded_server_runs_replay_whole_with_contiguous_sequences(
    make_server, ws_client, tmp_path
):
    """The recorder's own store over two server runs (the second numbers from 1 again):
    the replay sends every stored tick in order, the first run's sequences as recorded and
    the second's continuing them, so a client keeps them all (none dropped as repeats)."""
    store = tmp_path / "store"
    for _ in range(2):
        live = await make_server(record=str(store), record_flush=0.2)
        client = await ws_client(live)
        await client.subscribe("ES", ["bid_ask", "last"])
        await client.ticks(150)
        await live.stop()  # a clean stop writes every tick
    table = layout.ticks_dataset(layout.open_root(store)).to_table()
    rows = sorted(table.to_pylist(), key=lambda r: r["time"])
    assert len({r["server_id"] for r in rows}) == 2
    server = await replay_server(store, speed=None)
    try:
        client = await ws_client(server)
        await client.subscribe("ES", ["bid_ask", "last"], batch_ms=5)
        got = await ticks_until_complete(client, 2)
    finally:
        await server.stop()
    assert [(g["recv_ns"], g["tick_type"]) for g in got] == [
        (r["time"].value, r["tick_type"]) for r in rows
    ]
    first_run = rows[0]["server_id"]
    for tick_type in ("bid_ask", "last"):
        mine = [(g, r) for g, r in zip(got, rows, strict=True) if r["tick_type"] == tick_type]
        assert [g["sequence"] for g, _ in mine] == list(range(1, len(mine) + 1))
        kept = [(g["sequence"], r["sequence"]) for g, r in mine if r["server_id"] == first_run]
        assert all(replayed == recorded for replayed, recorded in kept)


@pytest.fixture
def bucket() -> Iterator[str]:
    """A local S3 endpoint (moto's server) with an empty bucket; the store URI in it."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        pafs.S3FileSystem(
            endpoint_override=endpoint,
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        ).create_dir("ticks-bucket")
        try:
            yield f"s3://ticks-bucket/team?endpoint_override={endpoint}&scheme=http&region=us-east-1"
        finally:
            server.stop()


async def test_a_recording_in_a_bucket_replays_as_from_a_disk(recording, bucket, ws_client):
    write_recording(bucket, recording.rows, recording.contracts)
    server = await replay_server(bucket, speed=None)
    try:
        client = await ws_client(server)
        await client.subscribe("AAPL", ["bid_ask", "last"], batch_ms=5)
        got = await ticks_until_complete(client, 2)
    finally:
        await server.stop()
    assert got == recording.of(recording.id_of("AAPL"))


async def test_a_replay_waits_for_its_client_instead_of_overfilling_the_queue(recording, ws_client):
    """A queue of 64 ticks, small socket buffers, the whole recording at full speed: the
    replay goes no faster than the client reads (a live source would have cut it off as a
    slow consumer)."""
    es = recording.id_of("ES")
    server = await replay_server(recording.path, speed=None, queue_size=64, socket_send_buffer=4096)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        client = await ws_client(server, sock=sock, max_queue=2)
        await client.subscribe("ES", ["bid_ask", "last"])
        got = await ticks_until_complete(client, 2)
        path = "/v2/stream/ES?tick_types=bid_ask,last"
        async with sse(server, path) as source:
            events = [(event, data) async for event, data, _ in sse_events(source)]
    finally:
        await server.stop()
    assert got == recording.of(es)
    assert [d["data"] for e, d in events if e == "tick"] == recording.of(es)
    assert not [d for e, d in events if e == "error"]


async def test_the_recordings_own_gaps_are_told_where_the_replay_reaches_them(
    recording, ws_client, tmp_path
):
    """A gap the recorder wrote (a crash window) comes as an `info` `gap` on its stream
    right before the first tick after it; one after the stream's last tick, before its
    replay_completed."""
    copy, lost, _ = with_recorded_gaps(recording, tmp_path)
    server = await replay_server(copy, speed=None)
    try:
        client = await ws_client(server)
        sub = await client.subscribe("ES", ["bid_ask", "last"])
        await ticks_until_complete(client, 2)
    finally:
        await server.stop()
    last_stream = next(s["stream_id"] for s in sub["streams"] if s["tick_type"] == "last")
    mine = [m for m in client.seen if m.get("stream_id") == last_stream]
    told = [n for n, m in enumerate(mine) if m["type"] == "info" and m["data"]["status"] == "gap"]
    assert len(told) == 2
    assert mine[told[0] + 1]["data"]["recv_ns"] == lost["end"]  # right before that tick
    assert mine[told[0] - 1]["data"]["recv_ns"] == lost["start"]
    details = mine[told[0]]["data"]["details"]
    assert details["reason"] == "server_restarted" and details["recorded"] is True
    assert [m["type"] for m in mine[told[1] :]] == ["info", "info", "complete"]


async def test_loop_starts_over_as_one_session_that_goes_on(recording, ws_client):
    """--loop: after the last tick the replay starts over, each pass shifted to follow the
    one before (sequences contiguous, receive times increasing), until the client stops."""
    trades = recording.of(recording.id_of("AAPL"), ("last",))
    n = len(trades)
    server = await replay_server(recording.path, speed=None, loop=True)
    try:
        client = await ws_client(server)
        await client.subscribe("AAPL", ["last"], limit=2 * n + 5)
        complete = await client.expect("complete")
    finally:
        await server.stop()
    got = [m["data"] for m in client.seen if m["type"] == "tick"]
    assert complete["data"]["reason"] == "limit_reached" and len(got) == 2 * n + 5
    first = trades[0]["sequence"]
    assert [g["sequence"] for g in got] == list(range(first, first + 2 * n + 5))
    assert all(a["recv_ns"] < b["recv_ns"] for a, b in zip(got, got[1:], strict=False))
    assert got[:n] == trades
    shift = got[n]["recv_ns"] - trades[0]["recv_ns"]
    assert [g["price"] for g in got[n : 2 * n]] == [t["price"] for t in trades]
    assert [g["recv_ns"] - shift for g in got[n : 2 * n]] == [t["recv_ns"] for t in trades]


async def test_the_delta_command_studies_a_replay_and_ends_with_it(recording):
    """`ibstream delta` works unchanged against a replay: it ends when the replay completes,
    and its summary is the batch analytics of the recorded ES ticks."""
    import orjson

    from ibstream.analytics import classify, summary

    server = await replay_server(recording.path, speed=None)
    try:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "ibstream", "delta", "ES", "--server", server.url, "--json"),
            *("--seconds", "300"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        await server.stop()
    assert proc.returncode == 0, err.decode()
    assert "replay_completed" in err.decode()
    final = orjson.loads(out.decode().splitlines()[-1])
    trades = classify(ibstream.store.open(recording.path).ticks("ES"))
    expected = summary(trades).iloc[0]
    assert final["type"] == "summary" and final["total_trades"] == len(trades) > 0
    assert final["net_delta"] == expected["net_delta"]
    assert final["buy_volume"] == expected["buy_volume"]
