"""The research client against the real server, over WebSocket and SSE: streams, callbacks,
collect, typed errors, ping and state."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from ibstream.client import AsyncClient, ErrorEvent
from ibstream.client.frames import TICK_COLUMNS
from ibstream.errors import (
    ContractNotFound,
    ErrorCode,
    InvalidMessage,
    InvalidTickType,
    RateLimitExceeded,
    StreamError,
)
from tests.client_fixtures import EventRecorder
from tests.conftest import WAIT, Changes, assert_contiguous

TRANSPORTS = ["websocket", "sse"]
ES = 637533641


def by_type(ticks: list[dict]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for tick in ticks:
        out.setdefault(tick["tick_type"], []).append(tick["sequence"])
    return out


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stream_iterates_contiguous_ticks_then_closes(server, transport):
    async with AsyncClient(server.url, transport) as client:
        assert client.state == "connected"
        async with client.stream("ES", ("BidAsk", "last")) as stream:
            assert stream.contract["contract_id"] == ES == stream.contract_id
            ticks = []
            async with asyncio.timeout(WAIT):
                async for tick in stream:
                    ticks.append(tick)
                    if len(ticks) == 60:
                        break
        assert not stream.active
        assert set(by_type(ticks)) == {"bid_ask", "last"}
        for seqs in by_type(ticks).values():
            assert_contiguous(seqs)
        # positions count what arrived, which may be more than the loop took from the inbox
        assert all(stream.positions[t] >= s[-1] for t, s in by_type(ticks).items())
        assert stream.received >= len(ticks) and stream.duplicates == 0
        assert client.subscriptions == []
    assert client.state == "closed"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_callbacks_receive_ticks_and_close_ends_them(server, transport):
    got: list[dict] = []
    changes = Changes()

    def on_tick(tick: dict) -> None:
        got.append(tick)
        changes.notify()

    async with AsyncClient(server.url, transport) as client:
        stream = await client.stream(265598, "last", on_tick=on_tick)
        await changes.until(lambda: len(got) >= 10)
        with pytest.raises(TypeError):
            await anext(stream)
        await stream.close()
        count = len(got)
        assert_contiguous([t["sequence"] for t in got])
        assert {t["contract_id"] for t in got} == {265598}
        await client.ping()  # a round trip after close: no tick for the closed stream came
        assert len(got) == count


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_collect_returns_the_tick_frame(server, transport):
    async with AsyncClient(server.url, transport) as client:
        frame = await client.collect("ES", limit=50, progress=False)
        assert len(frame) == 50
        assert list(frame.columns) == list(TICK_COLUMNS)
        assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.name == "time"
        for _, group in frame.groupby("tick_type", observed=True):
            assert_contiguous(group["sequence"].tolist())
        quick = await client.collect("ES", "last", seconds=0.2, progress=False)
        assert set(quick["tick_type"].astype(str)) <= {"last"}
        with pytest.raises(ValueError, match="seconds= or limit="):
            await client.collect("ES")
        with pytest.raises(ValueError, match="limit"):
            await client.collect("ES", limit=0)
        assert client.subscriptions == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_errors_are_typed_and_carry_their_code(server, transport):
    async with AsyncClient(server.url, transport) as client:
        failed = client.stream("NOSUCH", "last")
        with pytest.raises(ContractNotFound) as info:
            await failed
        assert info.value.code is ErrorCode.CONTRACT_NOT_FOUND and "NOSUCH" in info.value.message
        with pytest.raises(ContractNotFound):
            await anext(failed)  # iterating the failed handle raises again, never hangs
        never_opened = client.stream("ES", "last")
        await never_opened.close()
        assert [t async for t in never_opened] == []
        with pytest.raises(InvalidTickType) as bad:
            client.stream("ES", ["bid_ask", "trades"])
        assert bad.value.code is ErrorCode.INVALID_TICK_TYPE
        with pytest.raises(InvalidMessage):
            client.stream("", "last")
        with pytest.raises(ContractNotFound):
            await client.collect(["ES", "NOSUCH"], limit=5, progress=False)
        assert client.subscriptions == []  # the ES half of the failed collect was closed too
        assert client.state == "connected"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_ib_rejection_fails_that_subscription_only(server, gateway, transport):
    recorder = EventRecorder()
    async with AsyncClient(server.url, transport, on_event=recorder) as client:
        keep = await client.stream("AAPL", "last")
        gateway.fail_next("tick_by_tick", 10190)
        async with client.stream("ES", "bid_ask") as doomed:
            with pytest.raises(RateLimitExceeded) as info:
                async with asyncio.timeout(WAIT):
                    async for _ in doomed:
                        pass
        assert info.value.details["ib_code"] == 10190
        assert [e.error.code for e in recorder.errors] == [ErrorCode.RATE_LIMIT_EXCEEDED]
        assert isinstance(recorder.errors[0], ErrorEvent) and recorder.errors[0].contract_id == ES
        async with asyncio.timeout(WAIT):
            assert (await anext(keep))["contract_id"] == 265598


async def test_iterator_that_falls_behind_fails_alone(server):
    async with AsyncClient(server.url, max_queue=5) as client:
        lagging = await client.stream("ES", "bid_ask")
        fine = await client.collect("ES", "bid_ask", limit=20, progress=False)
        assert len(fine) == 20
        received = []
        with pytest.raises(StreamError) as info:
            async with asyncio.timeout(WAIT):
                async for tick in lagging:
                    received.append(tick)
        assert info.value.code is ErrorCode.SLOW_CONSUMER and len(received) == 5
        assert client.state == "connected"


async def test_ping_and_state_events(server):
    recorder = EventRecorder()
    client = AsyncClient(server.url, on_event=recorder)
    assert client.state == "connecting"
    assert await client.ping() >= 0
    await client.close()
    await client.close()  # twice is fine
    assert recorder.states == ["connected", "closed"]
    with pytest.raises(StreamError) as info:
        await client.stream("ES")
    assert info.value.code is ErrorCode.CONNECTION_ERROR
