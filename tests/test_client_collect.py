"""`collect` as a new user meets it: a stream error mid-way keeps what arrived (`exc.frame`),
the same contract named twice is collected once, and a list wider than one connection's
stream limit is spread over more connections instead of failing with "unsubscribe first"."""

from __future__ import annotations

import asyncio

import pytest

from ibstream.client import AsyncClient
from ibstream.errors import PermissionDenied

ES, NQ, AAPL = 637533641, 637533450, 265598


async def test_a_stream_error_mid_collect_raises_with_the_ticks_gathered(server, gateway):
    async with AsyncClient(server.url) as client:
        collecting = asyncio.create_task(client.collect("ES", "last", seconds=60, progress=False))
        await gateway.wait_for(lambda: any(s[2] == ES for s in gateway.subscriptions))
        flowing = asyncio.Event()
        watched: list[dict] = []

        def on_tick(tick: dict) -> None:  # joined after the collection: it has at least these
            watched.append(tick)
            if len(watched) >= 30:
                flowing.set()

        await client.stream("ES", "last", on_tick=on_tick)
        async with asyncio.timeout(20):
            await flowing.wait()
        req_id = next(s[1] for s in gateway.subscriptions if s[2] == ES)
        gateway.send_error(354, req_id=req_id)  # IB withdraws the permission mid-stream
        with pytest.raises(PermissionDenied) as failure:
            await collecting
    frame = failure.value.frame
    assert len(frame) >= 30 and set(frame["contract_id"]) == {ES}
    assert frame["sequence"].is_monotonic_increasing


@pytest.mark.parametrize("contracts", [["ES", "ES"], ["ES", ES], (ES, "ES", ES)])
async def test_the_same_contract_named_twice_is_collected_once(server, contracts):
    async with AsyncClient(server.url) as client:
        frame = await client.collect(contracts, limit=200, progress=False)
        assert client.subscriptions == []
    assert len(frame) == 200 and set(frame["contract_id"]) == {ES}
    assert not frame.duplicated(["tick_type", "sequence"]).any()  # no tick counted twice


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_collect_wider_than_one_connection_is_spread(make_server, transport):
    server = await make_server(max_streams_per_connection=4)  # two contracts of two types
    async with AsyncClient(server.url, transport) as client:
        frame = await client.collect(["ES", "NQ", "AAPL"], limit=600, progress=False)
        assert client.subscriptions == []
        assert await client.ping() >= 0  # its own connection still serves
    assert len(frame) == 600 and set(frame["contract_id"]) == {ES, NQ, AAPL}
    assert not frame.duplicated(["contract_id", "tick_type", "sequence"]).any()
