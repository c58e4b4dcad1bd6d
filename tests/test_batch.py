"""Batched tick frames (`config.batch_ms`, SSE `?batch_ms=`), end to end over real sockets.

A batched stream sends one `ticks` message per interval holding every tick of it; sequences,
limits and resume behave exactly as for one message per tick, and the client hands its
users the same ticks either way.
"""

from __future__ import annotations

import asyncio

import httpx
import pandas as pd
import pytest

from ibstream.client import AsyncClient, Backoff
from ibstream.client.events import EventLog, Gap
from ibstream.client.subscription import Subscription
from tests.conftest import AAPL, WAIT, assert_contiguous, sse, sse_events
from tests.proxy import TcpProxy
from tests.test_client_reconnect import Ticks, assert_exact

TRANSPORTS = ["websocket", "sse"]
FAST = Backoff(initial=0.05, maximum=0.5)
HIGH_RATE = 4000.0  # simulator events per second: many ticks per 50 ms interval


async def ws_batches(ws, stream_id: str) -> tuple[list[dict], dict]:
    """Every `ticks` message until the stream's `complete`, and that `complete`."""
    frames = []
    while True:
        msg = await ws.recv()
        if msg["type"] == "ticks":
            assert {item["stream_id"] for item in msg["data"]["ticks"]} == {stream_id}
            frames.append(msg)
        elif msg.get("stream_id") == stream_id:
            assert msg["type"] == "complete", msg
            return frames, msg


async def sse_batches(server, path: str, headers: dict | None = None) -> tuple[dict, list, dict]:
    """`subscribed`, every (ticks message, SSE id) and `complete` of one SSE response."""
    frames, subscribed, complete = [], {}, {}
    async with sse(server, path, headers) as source:
        assert source.response.status_code == 200
        async for event, data, event_id in sse_events(source):
            assert event == data["type"]
            if event == "subscribed":
                subscribed = data
            elif event == "ticks":
                frames.append((data, event_id))
            elif event == "complete":
                complete = data
    return subscribed, frames, complete


def sequences(frames: list[dict]) -> list[int]:
    return [tick["sequence"] for frame in frames for tick in frame["data"]["ticks"]]


@pytest.mark.parametrize("limit", [7, 1500])
async def test_ws_batched_stream_delivers_every_tick_once_in_fewer_frames(
    gateway, server, ws_client, limit
):
    gateway.set_rate(HIGH_RATE)
    ws = await ws_client(server)
    reply = await ws.subscribe("ES", ["bid_ask"], limit=limit, batch_ms=50)
    (stream,) = reply["streams"]
    assert reply["config"]["batch_ms"] == 50
    frames, complete = await ws_batches(ws, stream["stream_id"])
    seqs = sequences(frames)
    assert len(seqs) == limit == complete["data"]["total_ticks"]  # exact, then `complete`
    assert seqs[0] == stream["start_sequence"] + 1
    assert_contiguous(seqs)
    assert complete["data"]["final_sequence"] == seqs[-1]
    if limit > 100:
        assert len(frames) < limit / 5  # many ticks per frame at this rate
    for frame in frames:
        assert frame["timestamp"].endswith("Z")
        assert all(t["timestamp"].endswith("Z") and "recv_ns" in t for t in frame["data"]["ticks"])


async def test_sse_batched_stream_ids_are_last_sequences(gateway, server):
    gateway.set_rate(HIGH_RATE)
    subscribed, frames, complete = await sse_batches(
        server, "/v2/stream/ES/bid_ask?batch_ms=50&limit=1000"
    )
    assert subscribed["data"]["config"]["batch_ms"] == 50
    seqs = sequences([frame for frame, _ in frames])
    assert len(seqs) == 1000 == complete["data"]["total_ticks"]
    assert_contiguous(seqs)
    assert len(frames) < 200
    for frame, event_id in frames:
        assert event_id == str(frame["data"]["ticks"][-1]["sequence"])


async def test_sse_last_event_id_resumes_a_batched_stream(gateway, server):
    gateway.set_rate(HIGH_RATE)
    path = "/v2/stream/ES/bid_ask?batch_ms=20"
    _, first, _ = await sse_batches(server, path + "&limit=300")
    last_id = first[-1][1]
    _, again, _ = await sse_batches(server, path + "&limit=500", {"Last-Event-ID": last_id})
    seqs = sequences([frame for frame, _ in first + again])
    assert_contiguous(seqs)  # the replay picks up right after the last id: no hole, no repeat
    assert len(seqs) == 800


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cut_batched_connection_resumes_without_loss_or_repeat(gateway, server, transport):
    gateway.set_rate(1000.0)
    ticks = Ticks()
    async with TcpProxy(server.port) as proxy:
        async with AsyncClient(proxy.url, transport, backoff=FAST) as client:
            await client.stream("ES", ("bid_ask", "last"), on_tick=ticks, batch_ms=30)
            await ticks.more(200)
            assert proxy.cut() >= 1
            await client.wait_for(lambda: client.reconnects >= 1, WAIT)
            await client.wait_for(lambda: client.state == "connected", WAIT)
            await ticks.more(300)
            assert client.gaps == 0
        assert proxy.accepted >= 2
    assert_exact(ticks.got)
    assert all("timestamp" not in tick for tick in ticks.got)  # plain tick data, as unbatched


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_collect_batched_equals_collect_per_tick(gateway, server, transport):
    gateway.set_rate(2000.0)
    async with AsyncClient(server.url, transport) as client:
        plain, batched = await asyncio.gather(
            client.collect(AAPL, "bid_ask", limit=1500, progress=False),
            client.collect(AAPL, "bid_ask", limit=1500, progress=False, batch_ms=50),
        )
    lo = max(plain.sequence.min(), batched.sequence.min())
    hi = min(plain.sequence.max(), batched.sequence.max())
    assert hi - lo > 1000  # both saw mostly the same ticks
    same = [frame[frame.sequence.between(lo, hi)] for frame in (plain, batched)]
    pd.testing.assert_frame_equal(same[0], same[1])
    assert_contiguous(batched.sequence.tolist())


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_iterated_batched_stream_yields_tick_data_dicts(gateway, server, transport):
    gateway.set_rate(1000.0)
    async with AsyncClient(server.url, transport) as client:
        async with client.stream("ES", "bid_ask", batch_ms=20) as stream:
            got = []
            async with asyncio.timeout(WAIT):
                async for tick in stream:
                    got.append(tick)
                    if len(got) == 300:
                        break
    assert_contiguous([t["sequence"] for t in got])
    assert {frozenset(t) & {"timestamp", "type"} for t in got} == {frozenset()}
    assert all(t["tick_type"] == "bid_ask" and "bid_price" in t for t in got)


@pytest.mark.parametrize("value", [-5, 1001, "50", True])
async def test_invalid_batch_ms_names_the_field(server, ws_client, value):
    ws = await ws_client(server)
    reply = await ws.request(
        "subscribe", {"contract_id": AAPL, "tick_types": ["last"], "config": {"batch_ms": value}}
    )
    assert reply["type"] == "error" and reply["data"]["code"] == "INVALID_MESSAGE"
    assert reply["data"]["details"]["field"] == "data.config.batch_ms"


@pytest.mark.parametrize("value", ["-5", "1001", "fast"])
async def test_invalid_sse_batch_ms_is_a_400_naming_it(server, value):
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
        response = await http.get(f"/v2/stream/{AAPL}/last", params={"batch_ms": value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_MESSAGE" and error["details"]["field"] == "batch_ms"


async def test_client_refuses_a_bad_batch_ms_before_asking(server):
    async with AsyncClient(server.url) as client:
        for value in (0, -1, 1000.5, "50"):
            with pytest.raises(ValueError, match="batch_ms"):
                client.stream("ES", "last", batch_ms=value)


async def test_sse_sends_every_event_payload_to_the_observer(gateway, make_server):
    seen: list[bytes] = []
    server = await make_server(sent_observer=seen.append)
    gateway.set_rate(HIGH_RATE)
    _, frames, _ = await sse_batches(server, "/v2/stream/ES/bid_ask?batch_ms=50&limit=200")
    kinds = [p.split(b'"type":"', 1)[1].split(b'"', 1)[0] for p in seen]
    assert kinds[0] == b"subscribed" and kinds[-1] == b"complete"
    assert kinds.count(b"ticks") == len(frames)


# --- the client's bookkeeping of a batch (positions, duplicates, gaps) --------------------


class ListSink:
    def __init__(self) -> None:
        self.got: list[dict] = []

    def put(self, tick: dict) -> None:
        self.got.append(tick)

    def end(self, error: object = None) -> None:
        pass


def batch(first: int, last: int) -> dict:
    items = [
        {"contract_id": 1, "tick_type": "last", "sequence": n, "recv_ns": n, "timestamp": "t"}
        for n in range(first, last + 1)
    ]
    return {"type": "ticks", "stream_id": "s", "data": {"ticks": items}}


def test_overlapping_batches_drop_what_was_had_and_report_holes():
    events = EventLog("test", [])
    sink = ListSink()
    sub = Subscription(1, ["last"], sink, events, batch_ms=10)
    sub.bind({"streams": [{"stream_id": "s", "tick_type": "last", "start_sequence": 0}]})
    sub.on_message(batch(1, 5))
    sub.on_message(batch(3, 8))  # a replay overlapping what arrived: 6-8 are new
    sub.on_message(batch(1, 4))  # all had
    sub.on_message(batch(11, 12))  # 9-10 never came
    assert [t["sequence"] for t in sink.got] == [1, 2, 3, 4, 5, 6, 7, 8, 11, 12]
    assert all("timestamp" not in t for t in sink.got)
    assert (sub.duplicates, sub.received, sub.positions) == (7, 10, {"last": 12})
    (gap,) = [e for e in events.recent if isinstance(e, Gap)]
    assert gap.details == {"first_missing": 9, "last_missing": 10}


def mixed(*pairs: tuple[str, int]) -> dict:
    items = [
        {"stream_id": t, "contract_id": 1, "tick_type": t, "sequence": n, "recv_ns": i}
        for i, (t, n) in enumerate(pairs)
    ]
    return {"type": "ticks", "data": {"ticks": items}}


def test_a_frame_of_two_tick_types_keeps_its_order_and_per_type_bookkeeping():
    events = EventLog("test", [])
    sink = ListSink()
    sub = Subscription(1, ["bid_ask", "last"], sink, events, batch_ms=10)
    streams = [{"stream_id": t, "tick_type": t, "start_sequence": 0} for t in ("bid_ask", "last")]
    sub.bind({"streams": streams})
    sub.on_message(mixed(("bid_ask", 1), ("last", 1), ("bid_ask", 2), ("last", 2)))
    sub.on_message(mixed(("last", 2), ("bid_ask", 3), ("last", 3)))  # last 2 again: dropped
    sub.on_message(mixed(("bid_ask", 6), ("last", 4)))  # bid_ask 4-5 never came
    got = [(t["tick_type"], t["sequence"]) for t in sink.got]
    assert got == [
        ("bid_ask", 1),
        ("last", 1),
        ("bid_ask", 2),
        ("last", 2),
        ("bid_ask", 3),
        ("last", 3),
        ("bid_ask", 6),
        ("last", 4),
    ]
    assert all(set(t) & {"stream_id", "timestamp"} == set() for t in sink.got)
    assert (sub.duplicates, sub.received, sub.positions) == (1, 8, {"bid_ask": 6, "last": 4})
    (gap,) = [e for e in events.recent if isinstance(e, Gap)]
    assert (gap.tick_type, gap.details) == ("bid_ask", {"first_missing": 4, "last_missing": 5})


def test_a_repeat_and_a_hole_in_one_frame_are_found_tick_by_tick():
    """[5, 5, 7] after 4 has the right count, first and last for a quick check, yet holds a
    repeat (5) and a hole (6): the repeat is dropped and the hole reported."""
    events = EventLog("test", [])
    sink = ListSink()
    sub = Subscription(1, ["last"], sink, events, batch_ms=10)
    sub.bind({"streams": [{"stream_id": "last", "tick_type": "last", "start_sequence": 4}]})
    sub.on_message(mixed(("last", 5), ("last", 5), ("last", 7)))
    assert [t["sequence"] for t in sink.got] == [5, 7]
    assert (sub.duplicates, sub.positions) == (1, {"last": 7})
    (gap,) = [e for e in events.recent if isinstance(e, Gap)]
    assert gap.details == {"first_missing": 6, "last_missing": 6}
