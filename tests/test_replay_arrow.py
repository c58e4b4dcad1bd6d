"""The opt-in binary frame format (`config.format: "arrow"`): a replay server sends batched
ticks as Arrow IPC record batches; clients get exactly what JSON frames give them. Real
replay servers, real sockets; every JSON message checked against /v2/schema and every
binary frame against the published Arrow columns (tests/schema_check.py)."""

from __future__ import annotations

import asyncio

import pandas as pd
import pyarrow as pa
import pytest

import ibstream
from ibstream.client.events import EventLog, Gap, Info
from ibstream.client.subscription import Subscription
from ibstream.errors import InvalidMessage
from ibstream.protocol.arrow import ARROW_TICK_SCHEMA, decode_frame
from tests.conftest import WAIT, get_json, sse
from tests.proxy import TcpProxy
from tests.replay_fixtures import (  # the fixtures too: recording, small_batches
    Recorded,
    recording_fixture,  # noqa: F401
    replay_server,
    small_batches_fixture,  # noqa: F401
    threaded_replay,
    with_recorded_gaps,
)


def wire(row: dict) -> dict:
    """An Arrow row as the `data` of a tick message: no stream_id, nulls left out."""
    return {k: v for k, v in row.items() if v is not None and k != "stream_id"}


def recorded_frame(recording: Recorded, symbols: list[str]) -> pd.DataFrame:
    from ibstream.client.frames import ticks_to_frame

    rows = [r for s in symbols for r in recording.of(recording.id_of(s))]
    return ticks_to_frame(sorted(rows, key=lambda r: r["recv_ns"]))


def test_collect_over_arrow_is_the_recorded_frame_and_the_json_one(recording, small_batches):
    with threaded_replay(recording.path, speed=None) as server:
        with ibstream.Client(server.url) as client:
            arrow = client.collect("ES", progress=False, batch_ms=5, format="arrow")
            json = client.collect("ES", progress=False, batch_ms=5)
            both = client.collect(["ES", "AAPL"], progress=False, batch_ms=5, format="arrow")
            head = client.collect("AAPL", progress=False, batch_ms=5, format="arrow", limit=101)
    expected = recorded_frame(recording, ["ES"])
    pd.testing.assert_frame_equal(arrow, expected)  # in order, every dtype, as recorded
    pd.testing.assert_frame_equal(arrow, json)
    pd.testing.assert_frame_equal(both, recorded_frame(recording, ["ES", "AAPL"]))
    assert {c["symbol"] for c in both.attrs["contracts"]} == {"ES", "AAPL"}
    pd.testing.assert_frame_equal(head, recorded_frame(recording, ["AAPL"]).iloc[:101])


def test_a_paced_replay_over_arrow_is_the_recording_too(recording):
    """At a finite speed frames go out as rows fall due (small ones): the same frame."""
    with threaded_replay(recording.path, speed=20.0) as server:
        with ibstream.Client(server.url) as client:
            frame = client.collect("AAPL", progress=False, batch_ms=20, format="arrow")
    pd.testing.assert_frame_equal(frame, recorded_frame(recording, ["AAPL"]))


async def frames_until_complete(client, streams: int) -> tuple[list[dict], list[dict]]:
    """(tick rows of the Arrow frames, the JSON messages) until `streams` streams completed."""
    rows: list[dict] = []
    done = 0
    async with asyncio.timeout(WAIT):
        while done < streams:
            msg = await client.recv()
            if msg["type"] == "arrow":
                rows += [wire(r) for r in msg["data"]["ticks"]]
            assert msg["type"] not in ("tick", "ticks"), msg  # no JSON tick alongside
            done += msg["type"] == "complete"
    return rows, [m for m in client.seen if m["type"] != "arrow"]


async def test_the_protocol_frames_resume_and_limits(recording, ws_client):
    """The raw protocol: binary frames of the published columns, `subscribed` saying the
    format, a resume that goes on right after the positions, and limits per stream."""
    es = recording.id_of("ES")
    rows = recording.of(es)
    server = await replay_server(recording.path, speed=None)
    try:
        first = await ws_client(server)
        sub = await first.subscribe("ES", ["bid_ask", "last"], batch_ms=5, format="arrow")
        got, messages = await frames_until_complete(first, 2)
        cut = len(rows) // 3
        positions = {r["tick_type"]: r["sequence"] for r in rows[:cut]}
        second = await ws_client(server)
        await second.subscribe(
            "ES", ["bid_ask", "last"], batch_ms=5, format="arrow", resume_from=positions
        )
        tail, _ = await frames_until_complete(second, 2)
        third = await ws_client(server)
        await third.subscribe("AAPL", ["bid_ask", "last"], batch_ms=5, format="arrow", limit=150)
        limited, ends = await frames_until_complete(third, 2)
        status, schema = await get_json(server, "/v2/schema")
    finally:
        await server.stop()
    assert sub["config"]["format"] == "arrow"
    assert got == rows
    assert [m["data"]["reason"] for m in messages if m["type"] == "complete"] == [
        "replay_completed"
    ] * 2
    assert tail == rows[cut:]
    aapl = recording.of(recording.id_of("AAPL"))
    for tick_type in ("bid_ask", "last"):
        mine = [r for r in limited if r["tick_type"] == tick_type]
        assert mine == [r for r in aapl if r["tick_type"] == tick_type][:150]
    completes = [m["data"] for m in ends if m["type"] == "complete"]
    assert [(c["reason"], c["total_ticks"]) for c in completes] == [("limit_reached", 150)] * 2
    described = schema["$defs"]["SubscribeConfig"]["properties"]["format"]
    assert status == 200 and "arrow" in str(described) and "Arrow IPC" in described["description"]


async def test_loop_passes_over_arrow_are_the_json_ones(recording, ws_client):
    """--loop shifts each pass in time and sequence; Arrow frames carry the shifted values
    exactly as JSON ticks do, up to the limit."""
    n = len(recording.of(recording.id_of("AAPL"), ("last",)))
    server = await replay_server(recording.path, speed=None, loop=True)
    try:
        arrow = await ws_client(server)
        await arrow.subscribe("AAPL", ["last"], batch_ms=5, format="arrow", limit=2 * n + 5)
        got, ends = await frames_until_complete(arrow, 1)
        json = await ws_client(server)
        await json.subscribe("AAPL", ["last"], limit=2 * n + 5)
        await json.expect("complete")
    finally:
        await server.stop()
    assert len(got) == 2 * n + 5
    assert got == [m["data"] for m in json.seen if m["type"] == "tick"]
    assert [m["data"]["reason"] for m in ends if m["type"] == "complete"] == ["limit_reached"]


async def test_every_frame_is_one_ipc_stream_of_the_published_columns(recording, ws_client):
    server = await replay_server(recording.path, speed=None)
    try:
        client = await ws_client(server)
        await client.subscribe("AAPL", ["last"], batch_ms=5, format="arrow")
        raw = await client.conn.recv()
    finally:
        await server.stop()
    assert isinstance(raw, bytes)
    table = decode_frame(raw)
    assert table.schema.equals(ARROW_TICK_SCHEMA) and table.num_rows > 0
    batches = list(pa.ipc.open_stream(raw))
    assert len(batches) == 1  # one record batch per frame
    first = recording.of(recording.id_of("AAPL"), ("last",))[0]
    assert wire(table.slice(0, 1).to_pylist()[0]) == first


def completed(client: ibstream.AsyncClient) -> int:
    return sum(isinstance(e, Info) and e.status == "replay_completed" for e in client.events)


async def test_a_client_cut_mid_replay_resumes_over_arrow_without_loss_or_repeat(recording):
    """`stream(format="arrow")` through a proxy cut while a frame is being handed over: the
    client reconnects, resumes from its positions and gets every recorded tick once."""
    aapl = recording.of(recording.id_of("AAPL"))
    server = await replay_server(recording.path, speed=None)
    got: list[dict] = []
    try:
        async with TcpProxy(server.port) as proxy:
            client = ibstream.AsyncClient(proxy.url)

            def on_tick(tick: dict) -> None:
                got.append(tick)
                if len(got) == len(aapl) // 2:
                    proxy.cut()

            async with client:
                await client.stream("AAPL", on_tick=on_tick, batch_ms=5, format="arrow")
                await client.wait_for(lambda: completed(client) == 2, WAIT)
    finally:
        await server.stop()
    assert client.reconnects >= 1
    assert got == aapl


async def test_where_it_cannot_be_served_the_refusal_says_why(recording, server, ws_client):
    live = await ws_client(server)
    data = {"contract_id": "ES", "tick_types": ["last"], "config": {"batch_ms": 5}}
    refused = await live.request(
        "subscribe", {**data, "config": {"batch_ms": 5, "format": "arrow"}}
    )
    no_batch = await live.request("subscribe", {**data, "config": {"format": "arrow"}})
    unknown = await live.request("subscribe", {**data, "config": {"format": "csv"}})
    replay = await replay_server(recording.path, speed=None)
    try:
        async with sse(replay, "/v2/stream/ES/last?batch_ms=5&format=arrow") as source:
            status, body = source.response.status_code, await source.response.aread()
        async with ibstream.AsyncClient(replay.url, transport="sse") as client:
            with pytest.raises(InvalidMessage, match="SSE is text"):
                await client.collect("ES", limit=5, batch_ms=5, format="arrow", progress=False)
            with pytest.raises(ValueError, match="batch_ms"):  # checked before any request
                await client.collect("ES", limit=5, format="arrow")
    finally:
        await replay.stop()
    for reply in (refused, no_batch, unknown):
        assert reply["type"] == "error" and reply["data"]["code"] == "INVALID_MESSAGE", reply
    assert "replay servers" in refused["data"]["message"]
    assert refused["data"]["details"]["field"] == "data.config.format"
    assert "needs 'batch_ms'" in no_batch["data"]["message"]
    assert unknown["data"]["details"]["field"] == "data.config.format"
    assert status == 400 and b"INVALID_MESSAGE" in body and b"SSE is text" in body


async def test_recorded_gaps_come_between_the_frames_before_and_after_them(
    recording, ws_client, tmp_path
):
    copy, lost, after = with_recorded_gaps(recording, tmp_path)
    server = await replay_server(copy, speed=None)
    try:
        client = await ws_client(server)
        sub = await client.subscribe("ES", ["bid_ask", "last"], batch_ms=5, format="arrow")
        await frames_until_complete(client, 2)
    finally:
        await server.stop()
    last = next(s["stream_id"] for s in sub["streams"] if s["tick_type"] == "last")
    seen = [
        ("rows", [r for r in m["data"]["ticks"] if r["stream_id"] == last])
        if m["type"] == "arrow"
        else (m["type"], m)
        for m in client.seen
        if m["type"] == "arrow" or m.get("stream_id") == last
    ]
    told = [
        n for n, (kind, m) in enumerate(seen) if kind == "info" and m["data"]["status"] == "gap"
    ]
    assert len(told) == 2
    before = [r for kind, rows in seen[: told[0]] if kind == "rows" for r in rows]
    following = next(rows for kind, rows in seen[told[0] + 1 :] if kind == "rows" and rows)
    assert before[-1]["recv_ns"] == lost["start"]  # the gap sits right between them
    assert following[0]["recv_ns"] == lost["end"]
    assert seen[told[0]][1]["data"]["details"]["recorded"] is True
    assert [kind for kind, _ in seen[told[1] :] if kind != "rows"] == ["info", "info", "complete"]
    assert all(not rows for kind, rows in seen[told[1] :] if kind == "rows")


def arrow_rows(rows: list[dict], stream_id: str = "s1") -> pa.Table:
    """Tick `data` rows as the rows of an Arrow frame."""
    plain = pa.schema(
        [
            pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
            for f in ARROW_TICK_SCHEMA
        ]
    )
    table = pa.Table.from_pylist([{**r, "stream_id": stream_id} for r in rows], schema=plain)
    return table.cast(ARROW_TICK_SCHEMA)


def test_a_frame_builder_types_arrow_frames_in_chunks_between_json_rows(recording):
    """Arrow frames typed `chunk_rows` at a time, between rows appended as dicts, give the
    frame of all the rows in order."""
    from ibstream.client.buffer import FrameBuilder
    from ibstream.client.frames import ticks_to_frame

    rows = recording.of(recording.id_of("ES"))
    builder = FrameBuilder(chunk_rows=100)
    cuts = list(range(0, len(rows), 37))
    for n, (lo, hi) in enumerate(zip(cuts, [*cuts[1:], len(rows)], strict=True)):
        if n % 5 == 4:
            for row in rows[lo:hi]:
                builder.append(row)
        else:
            builder.extend_arrow(arrow_rows(rows[lo:hi]))
    assert len(builder) == len(rows)
    pd.testing.assert_frame_equal(builder.to_frame(), ticks_to_frame(rows))


def test_duplicates_and_holes_in_frames_are_handled_as_in_json_frames(recording):
    """The client's frame path keeps the per-tick rules: rows it has had are dropped and
    counted, a hole in a stream's sequences is reported as a Gap."""
    from ibstream.client.arrow_frames import split_frame
    from ibstream.protocol.arrow import encode_frame

    rows = recording.of(recording.id_of("AAPL"), ("bid_ask",))[:40]
    table = arrow_rows(rows)

    def frame(lo: int, hi: int) -> bytes:
        return encode_frame(table.slice(lo, hi - lo).combine_chunks().to_batches()[0])

    got: list[dict] = []

    class Sink:
        def put(self, tick: dict) -> None:
            got.append(tick)

        def end(self, error: object = None) -> None:
            pass

    events = EventLog("test", [])
    sub = Subscription(
        "AAPL", ["bid_ask", "last"], Sink(), events, batch_ms=5, frame_format="arrow"
    )
    sub.stream_ids = {"s1": "bid_ask"}
    for payload in (frame(0, 20), frame(10, 25), frame(30, 40)):  # a repeat, then a hole
        for owner, rows_of_owner in split_frame(payload, {"s1": sub}.get):
            owner.on_frame(rows_of_owner)
    assert got == rows[:25] + rows[30:]
    assert sub.duplicates == 10
    holes = [e for e in events.recent if isinstance(e, Gap)]
    assert holes and all(g.reason == "missed" for g in holes)
