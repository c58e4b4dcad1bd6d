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
import pyarrow as pa
import pytest
from ib_insync import IB

from ibstream.gateway import GatewaySimulator
from ibstream.ib.pacing import Pacer, PacingRules
from ibstream.server.run import ServerHandle
from ibstream.server.tick_columns import Ticks
from ibstream.server.timeline import merged
from tests.client_fixtures import ServerProcess, free_port
from tests.conftest import WAIT, ServerFactory, WSClient
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
    done = [m["data"]["done_seconds"] for m in messages if m["type"] == "history_progress"]
    assert done and done == sorted(done), done  # progress never goes back
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


FAST = PacingRules().scaled(0.01)  # IB's pacing a hundred times faster, on both sides


@contextlib.asynccontextmanager
async def fast_market(
    make_server: ServerFactory, server_options: dict | None = None, **gateway_options: object
) -> AsyncIterator[tuple[GatewaySimulator, GroundTruth, ServerHandle]]:
    """A simulator with fast pacing, its ground truth, and a server whose pacer keeps it."""
    options: dict = {"seed": 7, "rate": 300.0, "bursts": False, "history_pacing": FAST}
    options.update(gateway_options)
    async with GatewaySimulator(port=0, **options) as gateway, watched(gateway) as truth:
        server = await make_server(ib_port=gateway.port, **(server_options or {}))
        server.source.pacer = Pacer(FAST, margin=0.02, backoff_seconds=0.01)
        yield gateway, truth, server


async def sse_messages(server: ServerHandle, path: str, **params: object) -> list[dict]:
    """An SSE answer (asked by `Accept`) as {type, data} messages."""
    headers = {"Accept": "text/event-stream"}
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT * 3) as client:
        response = await client.get(path, params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    out = []
    for block in response.text.split("\r\n\r\n"):
        if block.strip():
            fields = dict(line.split(": ", 1) for line in block.split("\r\n"))
            out.append({"type": fields["event"], "data": orjson.loads(fields["data"])})
    return out


async def arrow_answer(server: ServerHandle, path: str, **params: object) -> bytes:
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT * 3) as client:
        response = await client.get(path, params={**params, "format": "arrow"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.apache.arrow.stream"
    return response.content


async def arrow_batches(server: ServerHandle, path: str, **params: object) -> list:
    """An Arrow answer's (batch, custom metadata as JSON) pairs."""
    reader = pa.ipc.open_stream(await arrow_answer(server, path, **params))
    out = []
    while True:
        try:
            batch, meta = reader.read_next_batch_with_custom_metadata()
        except StopIteration:
            return out
        out.append((batch, {k.decode(): orjson.loads(v) for k, v in (meta or {}).items()}))


async def ws_history(client: WSClient, rid: str, **data: object) -> list[dict]:
    """A WebSocket history request's messages (its id), up to its last."""
    await client.send({"type": "history", "id": rid, "data": data})
    out: list[dict] = []
    while not out or out[-1]["type"] not in ("history_complete", "error"):
        msg = await client.recv(WAIT * 3)
        if msg.get("id") == rid:
            assert msg["data"]["request_id"] == rid
            out.append(msg)
    return out


def identity(ticks: list[dict]) -> list[tuple]:
    return [tuple(sorted(t.items())) for t in ticks]


async def test_jsonl_sse_arrow_and_websocket_give_the_same_ticks(
    make_server: ServerFactory, ws_client
):
    async with fast_market(make_server) as (_, truth, server):
        first, end = await market_past(truth, 3)
        window = {"tick_types": "bid_ask,all_last", "start": first, "end": end}
        lines = await get_lines(server, "/v2/history/ES", **window)
        check_answer(lines, truth, first, end)
        events = await sse_messages(server, "/v2/history/ES", **window)
        batches = await arrow_batches(server, "/v2/history/ES", **window)
        packed = await arrow_batches(server, "/v2/history/ES", **window, compression="lz4")
        sizes = [
            len(await arrow_answer(server, "/v2/history/ES", **window, compression=c))
            for c in ("none", "lz4")
        ]
        client = await ws_client(server)
        ws = await ws_history(
            client, "h1", contract="ES", tick_types=["bid_ask", "all_last"], start=first,
            end=f"{first + end - first}",
        )  # fmt: skip
    expected = identity(ticks_of(lines))
    assert [m["type"] for m in events] == [m["type"] for m in lines]
    assert identity(ticks_of(events)) == expected
    assert identity(ticks_of(ws)) == expected
    assert ws[0]["type"] == "history_started" and ws[-1]["type"] == "history_complete"
    # arrow: the first batch says started, every batch progress, the last (empty) complete
    assert "started" in batches[0][1] and all("progress" in m for _, m in batches)
    assert batches[-1][0].num_rows == 0 and batches[-1][1]["complete"]["missing"] == []
    table = pa.Table.from_batches([b for b, _ in batches])
    assert table.schema.names[-1] == "source"
    rows = [{k: v for k, v in r.items() if v is not None} for r in table.to_pylist()]
    for row in rows:
        row.pop("stream_id")
    assert identity(rows) == expected
    assert batches[-1][1]["complete"]["ticks"] == len(rows) == len(expected)
    # compression=lz4: the same batches, read by plain pyarrow (the transport's bytes smaller)
    assert pa.Table.from_batches([b for b, _ in packed]).equals(table)
    assert [m["complete"] for _, m in packed[-1:]] == [batches[-1][1]["complete"]]
    assert sizes[1] < sizes[0] / 2, sizes


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"start": "{end}", "end": "{first}"}, "start", "must be before end"),
        ({"start": "{future}"}, "start", "in the future"),
        ({"start": "yesterday"}, "start", "ISO-8601"),
        ({"start": "{first}", "end": "1765000000000"}, "end", "milliseconds"),
        ({"start": "{first}", "tick_types": "bid_ask,trades"}, "tick_types", "trades"),
        ({"end": "{first}"}, "start", "missing"),
        ({"start": "{first}", "limit": "3"}, "limit", "unknown query parameter"),
        ({"start": "{first}", "compression": "lz4"}, "compression", "unless format=arrow"),
        ({"start": "{first}", "format": "arrow", "compression": "gzip"}, "compression", "lz4"),
        ({"start": "{first}", "format": "xml"}, "format", "one of jsonl, sse, arrow"),
    ],
)
async def test_bad_input_is_one_error_naming_the_field(
    server: ServerHandle, params: dict, field: str, words: str
):
    now = int(time.time())
    values = {"first": now - 60, "end": now - 30, "future": now + 3600}
    query = {k: v.format(**values) for k, v in params.items()}
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
        response = await client.get("/v2/history/ES", params=query)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] in ("INVALID_MESSAGE", "INVALID_TICK_TYPE"), error
    assert error["details"]["field"].split(".")[0] == field, error  # tick_types.1: the item
    assert words in error["message"], error


async def test_bad_input_on_the_websocket_is_an_error_with_the_id(server: ServerHandle, ws_client):
    client = await ws_client(server)
    now = int(time.time())
    for rid, data, field in (
        ("a", {"contract": "ES", "start": now + 60}, "start"),
        ("b", {"contract": "ES", "start": now - 10, "end": now - 20}, "start"),
        ("c", {"contract": "ES", "start": "soon"}, "data.start"),
        ("d", {"contract": "ES", "start": now - 10, "tick_types": ["quotes"]}, "data.tick_types"),
    ):
        await client.send({"type": "history", "id": rid, "data": data})
        reply = await client.expect("error", request_id=rid)
        assert reply["id"] == rid and reply["data"]["details"]["field"].startswith(field), reply
    await client.send({"type": "history_cancel", "id": "nothing"})
    reply = await client.expect("error", request_id="nothing")
    assert reply["data"]["code"] == "STREAM_NOT_FOUND"
    await client.send({"type": "history", "data": {"contract": "ES", "start": now - 10}})
    reply = await client.expect("error")
    assert reply["data"]["details"]["field"] == "id" and "id" not in reply, reply


async def test_an_unknown_contract_is_contract_not_found(server: ServerHandle):
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
        response = await client.get("/v2/history/NOSUCH", params={"start": int(time.time()) - 9})
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "CONTRACT_NOT_FOUND"


async def test_no_history_permission_is_missing_with_ibs_code(make_server: ServerFactory):
    """An account without ES permission: the answer is complete, empty, and says why for
    each tick type (no ground truth: its subscription is refused as well)."""
    async with GatewaySimulator(port=0, history_pacing=FAST, no_permission=("ES",)) as gateway:
        server = await make_server(ib_port=gateway.port)
        server.source.pacer = Pacer(FAST, margin=0.02, backoff_seconds=0.01)
        first = int(time.time()) - 5
        messages = await get_lines(server, "/v2/history/ES", start=first, end=first + 3)
    complete = messages[-1]["data"]
    assert messages[-1]["type"] == "history_complete" and complete["ticks"] == 0
    assert {m["tick_type"] for m in complete["missing"]} == {"bid_ask", "last"}
    for entry in complete["missing"]:
        assert entry["code"] == "PERMISSION_DENIED" and entry["ib_code"] == 162, entry
        assert "permission" in entry["ib_message"].lower()
        assert (entry["start_ns"], entry["end_ns"]) == (first * NS, (first + 3) * NS)


async def test_a_range_past_what_ib_keeps_is_missing_with_ibs_no_data(
    make_server: ServerFactory,
):
    async with fast_market(make_server, history_limit=20) as (_, truth, server):
        first, end = await market_past(truth, 2)
        messages = await get_lines(server, "/v2/history/ES", start=first - 3600, end=first - 60)
    complete = messages[-1]["data"]
    assert complete["ticks"] == 0 and len(complete["missing"]) == 2, complete
    for entry in complete["missing"]:
        assert entry["code"] == "STREAM_NOT_FOUND" and entry["ib_code"] == 162, entry
        assert "no data" in entry["ib_message"].lower()


async def test_ib_lost_mid_way_is_a_partial_answer_that_says_what_is_missing(
    make_server: ServerFactory,
):
    """One page a second: the server's IB connection is dropped after the first page; the
    answer holds that page's ticks and says the rest is missing (CONNECTION_ERROR)."""
    slow = PacingRules(identical_seconds=0.1, burst_count=1, burst_seconds=1.0)
    async with fast_market(make_server, rate=600.0) as (gateway, truth, server):
        gateway.pacing.rules = slow
        server.source.pacer = Pacer(slow, margin=0.05)
        first, end = await market_past(truth, 6)
        messages = []
        params = {"tick_types": "bid_ask", "start": first, "end": end}
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=WAIT * 3) as client,
            client.stream("GET", "/v2/history/ES", params=params) as response,
        ):
            async for line in response.aiter_lines():
                messages.append(orjson.loads(line))
                if messages[-1]["type"] == "history_progress" and len(messages) < 5:
                    gateway.refuse_connections(5.0)
                    await gateway.drop_connections(keep={truth.ib.client.clientId})
    complete = messages[-1]["data"]
    assert messages[-1]["type"] == "history_complete", messages[-1]
    assert 0 < complete["ticks"] < sum(truth_keys(truth, "bid_ask", first, end).values())
    [missing] = complete["missing"]
    assert missing["code"] == "CONNECTION_ERROR" and missing["tick_type"] == "bid_ask"
    assert first * NS < missing["start_ns"] < missing["end_ns"] == end * NS
    ticks = ticks_of(messages)
    assert max(t["ib_time"] for t in ticks) * NS < missing["start_ns"]


async def test_websocket_history_is_bounded_by_the_queue_and_cancellable(
    make_server: ServerFactory, ws_client
):
    """With a 600-tick queue, history messages hold at most 300 ticks and the client is
    never cut off; a slow request (one IB page a second) is ended by `history_cancel`, and
    the connection goes on."""
    slow = PacingRules(identical_seconds=0.1, burst_count=1, burst_seconds=1.0)
    async with fast_market(make_server, {"queue_size": 600}, rate=1500.0) as (gw, truth, server):
        first, end = await market_past(truth, 6)
        client = await ws_client(server)
        window = {"contract": "ES", "tick_types": ["bid_ask", "all_last"], "start": first}
        answer = await ws_history(client, "q", **window, end=first + 3)
        gw.pacing.rules = slow
        server.source.pacer = Pacer(slow, margin=0.05)
        await client.send({"type": "history", "id": "c", "data": {**window, "end": end}})
        await client.expect("history_progress", request_id="c")
        await client.send({"type": "history_cancel", "id": "c"})
        ended = await client.expect("history_complete", request_id="c")
        pong = await client.request("ping")
    sizes = [len(m["data"]["ticks"]) for m in answer if m["type"] == "history_ticks"]
    assert max(sizes) <= 300 and sum(sizes) == answer[-1]["data"]["ticks"] > 1000, sizes
    assert not any(m["type"] == "error" for m in client.seen), client.seen
    assert ended["id"] == "c" and ended["data"]["cancelled"] is True, ended
    whole = sum(sum(truth_keys(truth, k, first, end).values()) for k in KINDS)
    assert ended["data"]["ticks"] < whole
    assert pong["type"] == "pong"


async def test_history_is_published_in_openapi(server: ServerHandle):
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
        spec = (await client.get("/openapi.json")).json()
        head = await client.head("/v2/history/ES", params={"start": 1, "format": "arrow"})
    operation = spec["paths"]["/v2/history/{contract}"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert names == {"contract", "tick_types", "start", "end", "format", "compression", "token"}
    assert set(operation["responses"]["200"]["content"]) == {
        "application/x-ndjson",
        "text/event-stream",
        "application/vnd.apache.arrow.stream",
    }
    assert head.status_code == 200
    assert head.headers["content-type"] == "application/vnd.apache.arrow.stream"


async def test_the_store_answers_while_ib_is_away(make_server: ServerFactory, tmp_path: Path):
    """IB gone: the recorded part of a window comes from the store (the contract as the
    store knows it), the rest is missing with CONNECTION_ERROR; a window the store holds
    nothing of is refused before anything streams."""
    store = str(tmp_path / "store")
    async with (
        GatewaySimulator(port=0, seed=9, rate=300.0, bursts=False) as gateway,
        watched(gateway) as truth,
    ):
        recorder = await make_server(
            ib_port=gateway.port,
            record=store,
            record_flush=0.2,
            record_contracts=("ES:all_last,bid_ask",),
        )
        await truth.until_second(int(time.time()) + 4)
        await recorder.stop()
        await truth.drained()
    server = await make_server(
        ib_port=free_port(), ib_connect_timeout=0.2, record=store, backfill=False
    )
    messages = await get_lines(
        server, "/v2/history/ES", tick_types="bid_ask,all_last", start=truth.first_second - 2
    )  # and up to now: the store holds the middle
    complete = messages[-1]["data"]
    assert messages[-1]["type"] == "history_complete" and complete["from_ib"] == 0
    plan = messages[0]["data"]["plan"]
    stored = [p for p in plan if p["source"] == "store"]
    assert len(stored) == 2 and complete["from_store"] == complete["ticks"] > 100
    assert {m["code"] for m in complete["missing"]} == {"CONNECTION_ERROR"}
    held = sorted((m["tick_type"], m["start_ns"], m["end_ns"]) for m in complete["missing"])
    assert held == sorted(
        (p["tick_type"], p["start_ns"], p["end_ns"]) for p in plan if p["source"] == "ib"
    )
    ticks = ticks_of(messages)
    for piece in stored:  # the recorded whole seconds equal the ground truth's
        lo = max(piece["start_ns"] // NS + 1, truth.first_second)
        hi = piece["end_ns"] // NS
        assert keys(ticks, piece["tick_type"], lo, hi) == truth_keys(
            truth, piece["tick_type"], lo, hi
        )
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
        before = {"start": truth.first_second - 100, "end": truth.first_second - 50}
        response = await client.get("/v2/history/ES", params=before)
    assert response.status_code == 503, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "CONNECTION_ERROR" and "store holds none" in error["message"]


async def test_a_refused_tick_type_is_missing_and_the_others_are_answered(
    make_server: ServerFactory,
):
    """IB refuses the first request with 354: that tick type's hole is missing with IB's
    code and text, the other tick type is answered in full (a partial answer says so)."""
    async with fast_market(make_server) as (gateway, truth, server):
        first, end = await market_past(truth, 2)
        gateway.fail_next("historical_ticks", 354)
        messages = await get_lines(
            server, "/v2/history/ES", tick_types="bid_ask,all_last", start=first, end=end
        )
    complete = messages[-1]["data"]
    [missing] = complete["missing"]
    assert missing["ib_code"] == 354 and missing["code"] == "PERMISSION_DENIED", missing
    assert (missing["start_ns"], missing["end_ns"]) == (first * NS, end * NS)
    refused = missing["tick_type"]
    answered = ({"bid_ask", "all_last"} - {refused}).pop()
    ticks = ticks_of(messages)
    assert {t["tick_type"] for t in ticks} == {answered}
    assert keys(ticks, answered, first, end) == truth_keys(truth, answered, first, end)


async def test_the_recent_past_of_a_recorded_stream_comes_from_the_store_alone(
    make_server: ServerFactory, gateway: GatewaySimulator, truth: GroundTruth, tmp_path: Path
):
    """A server recording ES live, asked for the last seconds up to now while the market is
    quiet: the recorder is flushed first and the time since the last tick is no hole (the
    stream is live), so the store answers all of it and IB is not asked at all."""
    server = await make_server(
        record=str(tmp_path / "store"), record_contracts=("ES:all_last,bid_ask",)
    )
    channels = server.hub.channels
    start = int(time.time()) + 2  # the kept streams subscribe within a moment of start-up
    await truth.until_second(start + 3)
    gateway.set_rate(0.0)  # quiet from here: the last tick is before the request's now
    await truth.drained()
    assert len(channels) == 2 and all(c.ticks for c in channels.values()), channels
    messages = await get_lines(server, "/v2/history/ES", tick_types="bid_ask,all_last", start=start)
    complete = messages[-1]["data"]
    assert complete["requests"] == 0 and complete["from_ib"] == 0, complete
    assert gateway.history_requests == 0
    assert {p["source"] for p in messages[0]["data"]["plan"]} == {"store"}
    ticks = ticks_of(messages)
    end = max(t["ib_time"] for t in ticks) + 1
    first = max(start + 1, truth.first_second)
    for kind in KINDS:
        assert keys(ticks, kind, first, end) == truth_keys(truth, kind, first, end), kind


async def test_timeline_merges_chunked_sources_and_opens_each_only_when_reached():
    opened: list[str] = []

    def source(name: str, chunks: list[list[int]]) -> AsyncIterator[Ticks]:
        async def run() -> AsyncIterator[Ticks]:
            opened.append(name)
            for chunk in chunks:
                yield Ticks.from_dicts([{"recv_ns": n, "exchange": name} for n in chunk])

        return run()

    sources = [
        (1, source("a", [[1, 4], [], [9, 12]])),
        (2, source("b", [[2, 3, 10], [11]])),
        (20, source("late", [[20, 21]])),
    ]
    out, horizons = [], []
    async for ticks, horizon in merged(sources):
        out += ticks.to_dicts()
        horizons.append(horizon)
        if out and out[-1]["recv_ns"] < 20:
            assert "late" not in opened  # not opened before the merge reached it
    assert [t["recv_ns"] for t in out] == [1, 2, 3, 4, 9, 10, 11, 12, 20, 21]
    assert opened == ["a", "b", "late"]
    assert len(horizons) >= 6  # after every chunk a source gave (the empty one too)


async def test_a_streamed_history_takes_a_connection_slot_of_its_ip(make_server: ServerFactory):
    """With one connection per IP, a second history while one streams is refused (429,
    RATE_LIMIT_EXCEEDED); once the first is read to its end, the slot is free again."""
    slow = PacingRules(identical_seconds=0.1, burst_count=1, burst_seconds=1.0)
    options = {"max_connections_per_ip": 1}
    async with fast_market(make_server, options, rate=1500.0) as (gateway, truth, server):
        first, end = await market_past(truth, 3)
        gateway.pacing.rules = slow
        server.source.pacer = Pacer(slow, margin=0.05)
        params = {"tick_types": "bid_ask", "start": first, "end": end}
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
            async with client.stream("GET", "/v2/history/ES", params=params) as response:
                lines = response.aiter_lines()
                assert orjson.loads(await anext(lines))["type"] == "history_started"
                refused = await client.get("/v2/history/ES", params=params)
                rest = [orjson.loads(line) async for line in lines]
            again = await client.get("/v2/history/ES", params={**params, "end": first + 1})
    assert refused.status_code == 429, refused.text[:300]
    assert refused.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert rest[-1]["type"] == "history_complete" and rest[-1]["data"]["missing"] == []
    assert again.status_code == 200
    assert server.context.connections.limiter.counts == {}


async def test_a_restart_gap_backfill_filled_is_answered_by_the_store(tmp_path: Path):
    """A recording server killed (-9) and started again: backfill fills the restart's gap,
    and a history over the window is then all store (no IB request), equal to the ground
    truth one for one."""
    store = str(tmp_path / "store")
    options = ["--record", store, "--record-flush", "0.2"]
    options += ["--record-contract", "ES:all_last,bid_ask"]
    async with (
        GatewaySimulator(port=0, seed=21, rate=150.0, bursts=False) as gateway,
        watched(gateway) as truth,
    ):
        server = ServerProcess(gateway.port)
        try:
            await server.start(*options)
            start = int(time.time()) + 2  # recording by then
            await truth.until_second(start + 1)
            await server.kill()
            await truth.until_second(int(time.time()) + 2)  # nobody records
            await server.start(*options)
            lines = await server.wait_log("backfill: gap", "server_restarted", count=2, timeout=60)
            assert all("filled" in x and "partly" not in x for x in lines), lines
            end = int(time.time())
            await truth.until_second(end + 1)
            messages = await get_lines(
                server, "/v2/history/ES", tick_types="bid_ask,all_last", start=start, end=end
            )
        finally:
            await server.kill()
    assert {p["source"] for p in messages[0]["data"]["plan"]} == {"store"}, messages[0]
    complete = check_answer(messages, truth, start, end - 1)
    assert complete["requests"] == 0 and complete["from_ib"] == 0, complete
    sources = Counter(t["source"] for t in ticks_of(messages))
    assert sources["historical"] > 0 and sources["live"] > 0, sources
