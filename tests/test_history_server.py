"""History on request (`GET /v2/history/{contract}`, the WebSocket `history` request): the
answer for a window equals what an independent ib_insync client received live from the
simulator, one for one (IB second and fields), from IB alone and from a store that holds part
of the window (then IB is asked only for the holes); every format gives the same ticks; bad
input and IB's refusals are one clear error each, or `missing` entries in a partial answer.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from ib_insync import IB

from ibstream.gateway import GatewaySimulator
from ibstream.server.run import ServerHandle
from tests.conftest import WAIT, ServerFactory
from tests.history_fixtures import ES_ID, HOST, GroundTruth

KINDS = {  # wire tick type -> (ground truth kind, fields compared)
    "all_last": ("TRADES", ("price", "size")),
    "bid_ask": ("BID_ASK", ("bid_price", "ask_price", "bid_size", "ask_size")),
}
NS = 1_000_000_000


@contextlib.asynccontextmanager
async def watched(gateway: GatewaySimulator) -> AsyncIterator[GroundTruth]:
    """The ground truth: an ib_insync client subscribed to ES on `gateway` meanwhile."""
    ib = IB()
    await ib.connectAsync(HOST, gateway.port, clientId=random.randint(1, 999))
    try:
        found = GroundTruth(ib)
        await found.subscribe()
        yield found
    finally:
        ib.disconnect()


@pytest.fixture
async def truth(gateway: GatewaySimulator) -> AsyncIterator[GroundTruth]:
    async with watched(gateway) as found:
        yield found


async def get_lines(server: ServerHandle, path: str, **params: object) -> list[dict]:
    """A jsonl answer's messages, each line parsed."""
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT * 3) as client:
        response = await client.get(path, params=params)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [orjson.loads(line) for line in response.text.splitlines()]


def ticks_of(messages: list[dict]) -> list[dict]:
    return [t for m in messages if m["type"] == "history_ticks" for t in m["data"]["ticks"]]


def keys(ticks: list[dict], kind: str, first: int, end: int) -> Counter:
    """(IB second, fields) of the answer's `kind` ticks of IB seconds [first, end)."""
    fields = KINDS[kind][1]
    return Counter(
        (t["ib_time"], *(t.get(f) for f in fields))
        for t in ticks
        if t["tick_type"] == kind and first <= t["ib_time"] < end
    )


def truth_keys(truth: GroundTruth, kind: str, first: int, end: int) -> Counter:
    what, fields = KINDS[kind]
    return Counter(r[: 1 + len(fields)] for r in truth.window(what, first, end))


def check_answer(messages: list[dict], truth: GroundTruth, first: int, end: int) -> dict:
    """The answer's shape (started first, complete last, ticks in receive order) and its
    ticks equal to the ground truth over IB seconds [first, end); the complete message."""
    assert messages[0]["type"] == "history_started", messages[0]
    assert messages[-1]["type"] == "history_complete", messages[-1]
    complete = messages[-1]["data"]
    ticks = ticks_of(messages)
    assert complete["ticks"] == len(ticks)
    assert complete["from_store"] + complete["from_ib"] == len(ticks)
    assert complete["missing"] == []
    stamps = [t["recv_ns"] for t in ticks]
    assert stamps == sorted(stamps), "ticks not in receive order"
    assert all(len(m["data"]["ticks"]) <= 5000 for m in messages if m["type"] == "history_ticks")
    assert any(m["type"] == "history_progress" for m in messages)
    for kind in KINDS:
        expected = truth_keys(truth, kind, first, end)
        assert sum(expected.values()) > 50, (kind, expected)
        mine = keys(ticks, kind, first, end)
        assert mine == expected, (kind, mine - expected, expected - mine)
    return complete


async def market_past(truth: GroundTruth, seconds: int) -> tuple[int, int]:
    """Wait until the ground truth holds `seconds` whole seconds and the simulator's clock is
    past them: the window [first, end) in IB seconds."""
    first = truth.first_second
    end = first + seconds
    await truth.until_second(end)
    await truth.drained()
    while time.time() < end + 1:  # IB answers whole seconds that are over
        await truth.until_second(int(time.time()))
    return first, end


async def test_history_from_ib_alone_equals_ground_truth(
    make_server: ServerFactory, truth: GroundTruth
):
    server = await make_server()
    first, end = await market_past(truth, 4)
    messages = await get_lines(
        server, "/v2/history/ES", tick_types="bid_ask,all_last", start=first, end=end
    )
    complete = check_answer(messages, truth, first, end)
    assert complete["from_store"] == 0 and complete["requests"] >= 2
    started = messages[0]["data"]
    assert started["contract"]["contract_id"] == ES_ID
    assert started["start_ns"] == first * NS and started["end_ns"] == end * NS
    assert {p["source"] for p in started["plan"]} == {"ib"}
    ticks = ticks_of(messages)
    assert {t["source"] for t in ticks} == {"ib"} and {t["sequence"] for t in ticks} == {0}
    stamps = [t["recv_ns"] for t in ticks]
    assert len(set(stamps)) == len(stamps)
    assert all(first * NS <= s < end * NS for s in stamps)
    assert all(t["recv_ns"] // NS == t["ib_time"] for t in ticks)


def pages_needed(seconds: list[int], first: int, last: int) -> int:
    """The requests `ib.history.pages` makes for IB seconds [first, last] when IB holds the
    ticks of `seconds` (sorted): 1,000 a page plus the rest of its last second."""
    count, cursor = 0, first
    while cursor <= last:
        count += 1
        after = [s for s in seconds if s >= cursor]
        if len(after) < 1000:
            break
        cursor = after[999] + 1
    return count


async def test_history_reads_the_store_and_asks_ib_only_for_the_holes(
    make_server: ServerFactory, tmp_path: Path
):
    """A store recorded for part of the window: its ticks come from the store, and IB is
    asked only for the seconds before and after (request count: what those holes need)."""
    store = str(tmp_path / "store")
    async with (
        GatewaySimulator(port=0, seed=5, rate=600.0, bursts=False) as gateway,
        watched(gateway) as truth,
    ):
        first = truth.first_second
        await truth.until_second(first + 2)
        recorder = await make_server(
            ib_port=gateway.port,
            record=store,
            record_flush=0.2,
            record_contracts=("ES:all_last,bid_ask",),
        )
        await truth.until_second(int(time.time()) + 6)
        await recorder.stop()
        await truth.until_second(int(time.time()) + 2)
        first, end = await market_past(truth, int(time.time()) - first)
        server = await make_server(ib_port=gateway.port, record=store, backfill=False)
        messages = await get_lines(
            server, "/v2/history/ES", tick_types="bid_ask,all_last", start=first, end=end
        )
        asked = gateway.history_requests
    check_store_answer(messages, truth, first, end, asked)


def check_store_answer(
    messages: list[dict], truth: GroundTruth, first: int, end: int, asked: int
) -> None:
    # stored ticks are those received in the window: a tick of its last IB second received
    # after it is not in the answer, so the comparison stops a second before
    complete = check_answer(messages, truth, first, end - 1)
    plan = messages[0]["data"]["plan"]
    assert [p["source"] for p in plan if p["tick_type"] == "bid_ask"] == ["ib", "store", "ib"]
    assert complete["from_store"] > 0 and complete["from_ib"] > 0
    ticks = ticks_of(messages)
    assert {t["source"] for t in ticks} == {"ib", "live"}
    needed = 0
    for piece in plan:
        if piece["source"] != "ib":
            continue
        what = KINDS[piece["tick_type"]][0]
        seconds = sorted(r[0] for r in truth.rows[what])
        lo = piece["start_ns"] // NS - (1 if piece["start_ns"] > first * NS else 0)
        hi = piece["end_ns"] // NS if piece["end_ns"] < end * NS else end - 1
        needed += pages_needed(seconds, lo, hi)
        inside = [
            t
            for t in ticks
            if t["source"] == "ib"
            and t["tick_type"] == piece["tick_type"]
            and piece["start_ns"] <= t["recv_ns"] < piece["end_ns"]
        ]
        assert inside, piece
    whole = sum(pages_needed(sorted(r[0] for r in truth.rows[k]), first, end - 1) for k in
                ("TRADES", "BID_ASK"))  # fmt: skip
    assert complete["requests"] == asked == needed < whole, (complete, needed, whole)
    assert complete["from_ib"] == sum(1 for t in ticks if t["source"] == "ib")
