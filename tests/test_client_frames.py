"""Frames from the client: the same ticks give the same frame over SSE and WebSocket; several
contracts share one frame; a live TickBuffer keeps its window."""

from __future__ import annotations

import asyncio

import pandas as pd

from ibstream.client import AsyncClient
from ibstream.client.frames import TICK_COLUMNS
from tests.conftest import assert_contiguous

ES, MNQ = 637533641, 654503320


def keys(frame: pd.DataFrame) -> pd.Series:
    return (
        frame["contract_id"].astype(str)
        + frame["tick_type"].astype(str)
        + frame["sequence"].astype(str)
    )


def assert_exact(frame: pd.DataFrame) -> None:
    for _, group in frame.groupby(["contract_id", "tick_type"], observed=True):
        assert_contiguous(group["sequence"].tolist())


async def test_sse_and_websocket_give_identical_frames(server):
    async with AsyncClient(server.url, "websocket") as ws, AsyncClient(server.url, "sse") as sse:
        over_ws, over_sse = await asyncio.gather(
            ws.collect("ES", limit=300, progress=False),
            sse.collect("ES", limit=300, progress=False),
        )
    common = set(keys(over_ws)) & set(keys(over_sse))
    assert len(common) >= 100  # both ran at once on the same streams
    a = over_ws[keys(over_ws).isin(common).to_numpy()]
    b = over_sse[keys(over_sse).isin(common).to_numpy()]
    pd.testing.assert_frame_equal(a, b)
    assert set(a["tick_type"].astype(str)) == {"bid_ask", "last"}
    assert_exact(over_ws)
    assert_exact(over_sse)


async def test_two_contracts_in_one_frame(server):
    async with AsyncClient(server.url) as client:
        frame = await client.collect(["ES", "MNQ"], limit=400, progress=False)
    assert list(frame.columns) == list(TICK_COLUMNS) and len(frame) == 400
    assert set(frame["contract_id"]) == {ES, MNQ}
    assert set(frame["tick_type"].astype(str)) == {"bid_ask", "last"}
    assert_exact(frame)


async def test_buffer_keeps_its_window_while_the_client_lives(server):
    async with AsyncClient(server.url) as client:
        buffer = await client.buffer("ES", "bid_ask", max_ticks=50)
        # on the same connection as the buffer, so the buffer has these ticks too
        seen = await client.collect("ES", "bid_ask", limit=120, progress=False)
        window = buffer.to_frame()
        assert len(window) == 50 and buffer.total >= 100
        assert_exact(window)
        shared = seen[seen["sequence"].isin(window["sequence"]).to_numpy()]
        assert len(shared) >= 1
        pd.testing.assert_frame_equal(shared, window[window["sequence"].isin(shared["sequence"])])
        await client.unsubscribe(buffer)
        total = buffer.total
        await client.collect("ES", "bid_ask", limit=20, progress=False)
        assert buffer.total == total  # no longer filled
