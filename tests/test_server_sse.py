"""The SSE endpoints, and SSE and WebSocket carrying the very same ticks."""

from __future__ import annotations

import asyncio

from tests.conftest import (
    AAPL,
    EURUSD,
    WAIT,
    assert_contiguous,
    get_json,
    sse,
    sse_events,
    upstream,
)


async def test_single_stream_limit(server):
    async with sse(server, f"/v2/stream/{AAPL}/bid_ask?limit=5") as source:
        assert source.response.status_code == 200
        assert source.response.headers["x-ib-stream-version"] == "2.0"
        events = [e async for e in sse_events(source)]
    kinds = [e[0] for e in events]
    assert kinds == ["subscribed"] + ["tick"] * 5 + ["complete"]
    subscribed = events[0][1]
    assert subscribed["data"]["contract"]["contract_id"] == AAPL
    stream_id = subscribed["data"]["streams"][0]["stream_id"]
    ticks = events[1:6]
    assert all(t[1]["stream_id"] == stream_id for t in ticks)
    seqs = [t[1]["data"]["sequence"] for t in ticks]
    assert_contiguous(seqs)
    assert [int(t[2]) for t in ticks] == seqs  # the SSE id is the sequence
    done = events[-1][1]
    assert done["data"] == {
        **done["data"],
        "reason": "limit_reached",
        "total_ticks": 5,
        "final_sequence": seqs[-1],
    }


async def test_multi_tick_types_and_symbol(server):
    async with sse(server, "/v2/stream/AAPL?tick_types=bid_ask,last&limit=3") as source:
        events = [e async for e in sse_events(source)]
    streams = {s["tick_type"]: s["stream_id"] for s in events[0][1]["data"]["streams"]}
    assert set(streams) == {"bid_ask", "last"}
    for tick_type, stream_id in streams.items():
        ticks = [e for e in events if e[0] == "tick" and e[1]["stream_id"] == stream_id]
        assert len(ticks) == 3 and all(t[1]["data"]["tick_type"] == tick_type for t in ticks)
    completes = [e[1] for e in events if e[0] == "complete"]
    assert {c["stream_id"] for c in completes} == set(streams.values())
    assert events[-1][0] == "complete"


async def test_timeout_completes(server):
    async with sse(server, f"/v2/stream/{AAPL}/last?timeout=0.3") as source:
        events = [e async for e in sse_events(source)]
    assert events[-1][0] == "complete"
    assert events[-1][1]["data"]["reason"] == "timeout"


async def test_errors_before_stream_are_json(server):
    cases = [
        ("/v2/stream/NOSUCH/last", 404, "CONTRACT_NOT_FOUND"),
        (f"/v2/stream/{AAPL}/trades", 400, "INVALID_TICK_TYPE"),
        (f"/v2/stream/{AAPL}?tick_types=last,quotes", 400, "INVALID_TICK_TYPE"),
        (f"/v2/stream/{AAPL}", 400, "INVALID_MESSAGE"),
        (f"/v2/stream/{AAPL}/last?limit=0", 400, "INVALID_MESSAGE"),
        (f"/v2/stream/{AAPL}/last?timeout=soon", 400, "INVALID_MESSAGE"),
        (f"/v2/stream/{AAPL}/last?color=red", 400, "INVALID_MESSAGE"),
    ]
    for path, status, code in cases:
        got_status, body = await get_json(server, path)
        assert (got_status, body["error"]["code"]) == (status, code), path
        assert set(body["error"]) == {"code", "message", "details", "recoverable"}
    _, stats = await get_json(server, "/ws/stats")
    assert stats["connections"] == 0  # no slot leaked by a refused request


async def test_sse_and_ws_carry_the_same_ticks(server, ws_client):
    client = await ws_client(server)
    await client.subscribe(EURUSD, ["bid_ask"])
    ws_task = asyncio.create_task(client.ticks(60))
    async with sse(server, f"/v2/stream/{EURUSD}/bid_ask?limit=40") as source:
        sse_ticks = [e[1] for e in [e async for e in sse_events(source)] if e[0] == "tick"]
    ws_ticks = await ws_task
    by_seq_ws = {t["data"]["sequence"]: t["data"] for t in ws_ticks}
    by_seq_sse = {t["data"]["sequence"]: t["data"] for t in sse_ticks}
    assert_contiguous(sorted(by_seq_ws))
    assert_contiguous(sorted(by_seq_sse))
    overlap = set(by_seq_ws) & set(by_seq_sse)
    assert len(overlap) >= 20
    assert_contiguous(sorted(overlap))
    assert all(by_seq_ws[s] == by_seq_sse[s] for s in overlap)  # same tick, byte for byte data


async def test_last_event_id_resumes(server, ws_client):
    keeper = await ws_client(server)  # keeps the channel (and its ring) alive
    await keeper.subscribe(AAPL, ["bid_ask"])
    seqs = [t["data"]["sequence"] for t in await keeper.ticks(20)]
    headers = {"Last-Event-ID": str(seqs[5])}
    async with sse(server, f"/v2/stream/{AAPL}/bid_ask?limit=10", headers=headers) as source:
        ticks = [e for e in [e async for e in sse_events(source)] if e[0] == "tick"]
    got = [t[1]["data"]["sequence"] for t in ticks]
    assert got == list(range(seqs[5] + 1, seqs[5] + 11))


async def test_client_disconnect_detaches(make_server, gateway):
    server = await make_server(channel_grace_seconds=0)  # the last one out cancels at once
    async with sse(server, f"/v2/stream/{EURUSD}/mid_point") as source:
        events = sse_events(source)
        assert (await anext(events))[0] == "subscribed"
        assert (await anext(events))[0] == "tick"
        assert len(upstream(gateway, EURUSD, "MidPoint")) == 1
    await gateway.wait_for(lambda: not upstream(gateway, EURUSD, "MidPoint"))
    connections = server.context.connections
    await connections.wait_for(lambda: connections.limiter.total == 0, WAIT)


async def test_shutdown_completes_sse(make_server):
    server = await make_server()
    async with sse(server, f"/v2/stream/{AAPL}?tick_types=bid_ask,last") as source:
        events = sse_events(source)
        assert (await anext(events))[0] == "subscribed"
        assert (await anext(events))[0] == "tick"
        stopping = asyncio.create_task(server.stop())
        rest = [e async for e in events]
        await stopping
    completes = [e[1]["data"]["reason"] for e in rest if e[0] == "complete"]
    assert completes == ["server_shutdown", "server_shutdown"]
    assert rest[-1][0] == "complete"
