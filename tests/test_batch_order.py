"""Batched frames keep arrival order: whatever `batch_ms`, every consumer (collect, a live
buffer, iteration, on_tick) sees the ticks of all its streams in the order they reached the
server, so trades are priced against the quote before them, as without batching.

Receive stamps are strictly increasing across every stream of the server (the source's
clock), so "arrival order" is checkable as strictly increasing `recv_ns`.
"""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from ibstream.analytics import classify
from ibstream.client import AsyncClient
from tests.conftest import WAIT
from tests.test_batch import sse_batches

TRANSPORTS = ["websocket", "sse"]
RATE = 1500.0  # simulator events per second: many quotes and trades per interval
BOTH = ("bid_ask", "last")


def common_ticks(frame: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """The rows of `frame` whose (tick type, sequence) both frames hold."""
    keep = pd.Series(False, index=frame.index)
    for tick_type in frame.tick_type.unique():
        seqs = [f.sequence[f.tick_type == tick_type] for f in (frame, other)]
        lo, hi = max(s.min() for s in seqs), min(s.max() for s in seqs)
        keep |= (frame.tick_type == tick_type) & frame.sequence.between(lo, hi)
    return frame[keep.to_numpy()]


def strictly_increasing(recv_ns: list[int]) -> bool:
    return all(a < b for a, b in zip(recv_ns, recv_ns[1:], strict=False))


def runs(tick_types: list[str]) -> int:
    """How many runs of one tick type a sequence of ticks has (interleaving, not blocks)."""
    return 1 + sum(a != b for a, b in zip(tick_types, tick_types[1:], strict=False))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_batched_collect_equals_unbatched_row_for_row_and_side_for_side(
    gateway, server, transport
):
    gateway.set_rate(RATE)
    async with (
        AsyncClient(server.url, transport) as plain_client,
        AsyncClient(server.url, transport) as batched_client,
    ):
        plain, batched = await asyncio.gather(
            plain_client.collect("ES", BOTH, limit=3000, progress=False),
            batched_client.collect("ES", BOTH, limit=3000, progress=False, batch_ms=250),
        )
    assert batched.index.is_monotonic_increasing  # arrival order, not blocks per stream
    same = common_ticks(plain, batched), common_ticks(batched, plain)
    assert len(same[0]) > 2000 and set(same[0].tick_type) == {"bid_ask", "last"}
    pd.testing.assert_frame_equal(same[0], same[1])
    trades = [classify(frame) for frame in same]
    assert len(trades[0]) > 100
    pd.testing.assert_series_equal(trades[0].side, trades[1].side)
    pd.testing.assert_frame_equal(trades[0], trades[1])


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_on_tick_and_iteration_see_both_streams_in_arrival_order(gateway, server, transport):
    gateway.set_rate(RATE)
    called: list[dict] = []
    enough = asyncio.Event()

    def on_tick(tick: dict) -> None:
        called.append(tick)
        if len(called) >= 1000:
            enough.set()

    async with AsyncClient(server.url, transport) as client:
        callback = await client.stream("ES", BOTH, on_tick=on_tick, batch_ms=100)
        iterated = []
        async with client.stream("ES", BOTH, batch_ms=100) as stream:
            async with asyncio.timeout(WAIT):
                async for tick in stream:
                    iterated.append(tick)
                    if len(iterated) == 1000:
                        break
            await asyncio.wait_for(enough.wait(), WAIT)
        await callback.aclose()
    for got in (called, iterated):
        assert strictly_increasing([t["recv_ns"] for t in got])
        assert runs([t["tick_type"] for t in got]) > 20  # interleaved as they arrived
        assert all(set(t) & {"stream_id", "timestamp"} == set() for t in got)  # plain data


async def test_collect_of_two_contracts_and_a_live_buffer_keep_arrival_order(gateway, server):
    gateway.set_rate(RATE)
    async with AsyncClient(server.url) as client:
        buffer = await client.buffer("ES", BOTH, max_ticks=5000, batch_ms=100)
        frame = await client.collect(["ES", "NQ"], BOTH, limit=2000, progress=False, batch_ms=100)
        window = buffer.to_frame()
    assert runs(frame.contract_id.tolist()) > 20  # the two contracts interleaved
    assert len(window) > 200
    for got in (frame, window):
        assert got.index.is_monotonic_increasing and got.index.is_unique
        assert runs(got.tick_type.tolist()) > 20


async def test_sse_frames_of_two_tick_types_carry_both_positions_and_resume_exactly(
    gateway, server
):
    gateway.set_rate(RATE)
    path = "/v2/stream/ES?tick_types=bid_ask,last&batch_ms=50"
    subscribed, first, _ = await sse_batches(server, path + "&limit=400")
    streams = subscribed["data"]["streams"]
    positions = {s["tick_type"]: s["start_sequence"] for s in streams}
    for frame, event_id in first:
        for item in frame["data"]["ticks"]:
            positions[item["tick_type"]] = item["sequence"]
        assert event_id == ",".join(f"{t}:{n}" for t, n in positions.items())
    assert {i["tick_type"] for f, _ in first for i in f["data"]["ticks"]} == set(positions)
    _, again, _ = await sse_batches(server, path + "&limit=400", {"Last-Event-ID": first[-1][1]})
    for tick_type in positions:
        seqs = [
            item["sequence"]
            for frame, _ in first + again
            for item in frame["data"]["ticks"]
            if item["tick_type"] == tick_type
        ]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no hole, no repeat


@pytest.mark.parametrize("batch_ms", [None, 100])
async def test_collect_over_several_connections_is_in_arrival_order(gateway, make_server, batch_ms):
    """SSE has a response per contract, and a collection wider than a connection's stream
    limit spreads over helper connections: the frame still comes in the server's order."""
    gateway.set_rate(RATE)
    server = await make_server(max_streams_per_connection=2)
    for transport in TRANSPORTS:
        async with AsyncClient(server.url, transport) as client:
            frame = await client.collect(
                ["ES", "NQ"], BOTH, limit=2000, progress=False, batch_ms=batch_ms
            )
        assert runs(frame.contract_id.tolist()) > 20, transport  # interleaved, not blocks
        assert frame.index.is_monotonic_increasing and frame.index.is_unique, transport
        assert len(frame.attrs["contracts"]) == 2
