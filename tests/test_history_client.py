"""`Client.history`: its arguments checked before any request, the Arrow answer read as its
bytes arrive (whatever the chunking), partial and empty answers said, never silent."""

from __future__ import annotations

import datetime as dt
import time
import warnings
from collections import Counter
from collections.abc import AsyncIterator

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest

from ibstream.client import AsyncClient, Client
from ibstream.client.arrow_stream import ArrowStreamParser, message_size
from ibstream.client.frames import ticks_to_frame
from ibstream.client.history import (
    HistoryAnswer,
    HistoryEmptyWarning,
    HistoryIncompleteWarning,
    settle,
)
from ibstream.client.history_args import NS, check_query
from ibstream.errors import (
    ContractNotFound,
    ErrorCode,
    InvalidTickType,
    PermissionDenied,
    StreamError,
)
from ibstream.gateway import GatewaySimulator
from ibstream.protocol.arrow import ARROW_TICK_SCHEMA
from tests.client_fixtures import threaded_server
from tests.conftest import ServerFactory
from tests.history_fixtures import ES_ID, GroundTruth
from tests.test_history_server import (
    KINDS,
    fast_market,
    get_lines,
    market_past,
    ticks_of,
    truth_keys,
    watched,
)
from tests.test_widgets import market_rows

HISTORY_SCHEMA = ARROW_TICK_SCHEMA.append(pa.field("source", pa.string()))
NOW = 1_800_000_600 * NS
PAST = 1_700_000_000 * NS  # before the real clock: never "in the future"
NOWHERE = "http://127.0.0.1:9"  # nothing listens: a request would be a connection error


def answer_stream(
    rows: list[dict],
    *,
    per_batch: int = 70,
    complete: dict | None = None,
    error: dict | None = None,
) -> bytes:
    """A `format=arrow` history answer as the wire contract has it: `started` on the first
    batch, `progress` on each, an empty last batch with `complete` (or `error`)."""
    start, end = rows[0]["recv_ns"] if rows else NOW - NS, NOW
    started = {"contract": {"contract_id": 637533641, "symbol": "ES"}, "start_ns": start}
    started |= {"end_ns": end, "tick_types": ["bid_ask", "last"], "plan": []}
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, HISTORY_SCHEMA) as writer:
        chunks = [rows[i : i + per_batch] for i in range(0, len(rows), per_batch)] or [[]]
        for n, chunk in enumerate(chunks):
            table = pa.Table.from_pylist(
                [r | {"stream_id": r["tick_type"], "source": "ib"} for r in chunk],
                schema=HISTORY_SCHEMA,
            )
            meta = {"progress": orjson.dumps({"done_seconds": n, "total_seconds": len(chunks)})}
            if n == 0:
                meta["started"] = orjson.dumps(started)
            writer.write_batch(table.combine_chunks().to_batches()[0] if chunk else
                               pa.RecordBatch.from_pylist([], schema=HISTORY_SCHEMA),
                               custom_metadata=meta)  # fmt: skip
        end_meta = {"error": orjson.dumps(error)} if error else {
            "complete": orjson.dumps(complete or {"ticks": len(rows), "from_store": 0,
                                                  "from_ib": len(rows), "requests": 3,
                                                  "missing": []})}  # fmt: skip
        writer.write_batch(pa.RecordBatch.from_pylist([], schema=HISTORY_SCHEMA), end_meta)
    return sink.getvalue().to_pybytes()


def read_in_chunks(payload: bytes, sizes: list[int]) -> tuple[HistoryAnswer, ArrowStreamParser]:
    answer = HistoryAnswer(check_query("ES", start=NOW - 600 * NS, end=NOW, now_ns=NOW))
    parser = ArrowStreamParser()
    at = 0
    for size in sizes:
        for batch, meta in parser.feed(payload[at : at + size]):
            answer.take(batch, meta)
        at += size
    for batch, meta in parser.feed(payload[at:]):
        answer.take(batch, meta)
    parser.finish()
    return answer, parser


# -- the Arrow answer ---------------------------------------------------------------------


@pytest.mark.parametrize("chunking", ["whole", "bytes", "random"])
def test_an_arrow_answer_read_in_any_chunks_is_the_frame_of_its_ticks(chunking):
    rows = market_rows(500)
    payload = answer_stream(rows)
    sizes = {
        "whole": [len(payload)],
        "bytes": [1] * len(payload),
        "random": np.random.default_rng(3).integers(1, 3000, 2000).tolist(),
    }[chunking]
    answer, parser = read_in_chunks(payload, sizes)
    assert parser.ended and answer.complete is not None
    frame = settle(answer)
    pd.testing.assert_frame_equal(frame, ticks_to_frame(rows), check_like=False)
    assert frame.attrs["contracts"] == [{"contract_id": 637533641, "symbol": "ES"}]
    assert frame.attrs["history"]["requests"] == 3
    assert frame.attrs["history"]["missing"] == []
    assert answer.done_seconds == 7  # the last progress: 8 batches of 70 (0 .. 7)


def test_each_messages_size_is_read_from_its_metadata_as_pyarrow_frames_it():
    payload = answer_stream(market_rows(3000), per_batch=700)
    at, sizes = 0, []
    while True:
        source = pa.BufferReader(payload[at:])
        try:
            pa.ipc.read_message(source)
        except EOFError:
            break
        assert message_size(bytearray(payload[at:])) == source.tell()
        assert message_size(bytearray(payload[at : at + 7])) is None  # header not in yet
        sizes.append(source.tell())
        at += source.tell()
    assert len(sizes) > 8 and max(sizes) > 50_000  # schema, dictionaries, batches of 700


def test_a_stream_cut_inside_a_message_is_an_error_not_a_short_frame():
    payload = answer_stream(market_rows(200))
    parser = ArrowStreamParser()
    parser.feed(payload[: len(payload) // 2])
    with pytest.raises(ValueError, match="ended inside a message"):
        parser.finish()


def test_a_partial_answer_warns_naming_what_is_missing_and_ibs_code():
    rows = market_rows(100)
    missing = {"tick_type": "bid_ask", "start_ns": NOW - 60 * NS, "end_ns": NOW, "ib_code": 162,
               "code": "PERMISSION_DENIED", "message": "IB has no data",
               "ib_message": "HMDS query returned no data"}  # fmt: skip
    complete = {"ticks": 100, "from_store": 0, "from_ib": 100, "requests": 1, "missing": [missing]}
    answer, _ = read_in_chunks(answer_stream(rows, complete=complete), [4096] * 100)
    with pytest.warns(
        HistoryIncompleteWarning, match=r"bid_ask .* missing: IB has no data \(IB 162"
    ):
        frame = settle(answer)
    assert len(frame) == 100 and frame.attrs["history"]["missing"] == [missing]


def test_no_ticks_and_a_missing_part_raises_that_parts_error():
    missing = {"tick_type": "last", "start_ns": NOW - 60 * NS, "end_ns": NOW, "ib_code": 354,
               "code": "PERMISSION_DENIED", "message": "no market data permission"}  # fmt: skip
    complete = {"ticks": 0, "from_store": 0, "from_ib": 0, "requests": 1, "missing": [missing]}
    answer, _ = read_in_chunks(answer_stream([], complete=complete), [])
    with pytest.raises(PermissionDenied, match="no market data permission") as caught:
        settle(answer)
    assert caught.value.details["ib_code"] == 354
    assert caught.value.frame.empty  # type: ignore[attr-defined]


def test_a_complete_empty_answer_warns_that_there_were_no_ticks():
    answer, _ = read_in_chunks(answer_stream([]), [])
    with pytest.warns(HistoryEmptyWarning, match="no bid_ask/last ticks"):
        assert settle(answer).empty


def test_an_error_after_ticks_raises_it_with_the_ticks_so_far():
    rows = market_rows(150)
    error = {"code": "CONNECTION_ERROR", "message": "IB connection lost", "details": {}}
    answer, _ = read_in_chunks(answer_stream(rows, error=error), [1 << 20])
    with pytest.raises(StreamError, match="IB connection lost") as caught:
        settle(answer)
    assert caught.value.code == ErrorCode.CONNECTION_ERROR
    assert len(caught.value.frame) == 150  # type: ignore[attr-defined]


# -- arguments, checked before any request ---------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "kind", "match"),
    [
        ({"start": PAST, "end": PAST - NS}, ValueError, "start .* is not before end"),
        ({"start": NOW + 3600 * NS}, ValueError, "start .* is in the future"),
        ({"start": "2026-13-01"}, ValueError, "start"),
        ({"start": "soon"}, ValueError, "start must be a time .* or a duration"),
        ({"start": "-5min"}, ValueError, "start as a duration must be positive"),
        ({"start": "1h", "end": "yesterday"}, ValueError, "end: expected an ISO-8601 time"),
        ({"start": [1]}, TypeError, "start must be"),
        ({"start": 1_700_000_000_000}, ValueError, "start .* milliseconds are not taken"),
        ({"start": True}, TypeError, "start must be"),
        ({}, ValueError, "start is required"),
        ({"start": "1h", "tick_types": "trades"}, InvalidTickType, "trades"),
        ({"start": "1h", "tick_types": 5}, TypeError, "tick_types"),
        ({"start": "1h", "tick_types": []}, InvalidTickType, "tick_types must be a non-empty"),
        ({"start": "1h", "progress": "yes"}, TypeError, "progress"),
    ],
)
def test_bad_arguments_are_refused_by_name_before_any_request(kwargs, kind, match):
    client = Client(NOWHERE)  # a request would fail with a connection error instead
    with pytest.raises(kind, match=match):
        client.history("ES", **kwargs)
    with pytest.raises(TypeError, match="contract must be"):
        client.history(None, start="1h")


async def test_the_async_client_checks_the_same_way():
    client = AsyncClient(NOWHERE)
    with pytest.raises(ValueError, match="start .* is not before end"):
        await client.history("ES", start="2026-12-07T10:00", end="2026-12-07T09:00")


def test_times_in_every_spelling_mean_the_same_instant():
    at = 1_800_000_000 * NS
    spellings = [
        at, at // NS, float(at // NS), str(at), "2027-01-15T08:00:00Z", "2027-01-15T09:00:00+01:00",
        "2027-01-15T08:00:00", dt.datetime(2027, 1, 15, 8), pd.Timestamp("2027-01-15T08:00Z"),
        np.datetime64("2027-01-15T08:00:00"),
    ]  # fmt: skip
    assert pd.Timestamp(at, tz="UTC") == pd.Timestamp("2027-01-15T08:00:00Z")
    for value in spellings:
        assert check_query("ES", start=value, end=at + NS, now_ns=at + NS).start_ns == at, value


def test_a_duration_start_is_that_long_before_end_and_end_is_clamped_to_now():
    query = check_query("ES", start="30min", now_ns=NOW)
    assert (query.start_ns, query.end_ns) == (NOW - 1800 * NS, NOW)
    query = check_query("ES", ("last",), dt.timedelta(seconds=5), NOW - 10 * NS, now_ns=NOW)
    assert (query.start_ns, query.end_ns, query.tick_types) == (
        NOW - 15 * NS,
        NOW - 10 * NS,
        ("last",),
    )
    assert check_query("ES", start="1h", end=NOW + 3600 * NS, now_ns=NOW).end_ns == NOW
    assert (
        check_query("ES:FUT:CME:202703", start="1h").path == "/v2/history/ES%3AFUT%3ACME%3A202703"
    )


def test_warnings_point_at_the_callers_line():
    answer, _ = read_in_chunks(answer_stream([]), [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settle(answer, stacklevel=2)
    assert caught[0].filename == __file__


# -- against the real server and simulator ----------------------------------------------


def truth_frame_keys(frame: pd.DataFrame, kind: str, first: int, end: int) -> Counter:
    """(IB second, fields) of a frame's `kind` ticks of IB seconds [first, end)."""
    fields = KINDS[kind][1]
    mine = frame[frame["tick_type"] == kind]
    seconds = mine["ib_time"].astype("int64") // NS
    mine = mine[(seconds >= first).to_numpy() & (seconds < end).to_numpy()]
    seconds = mine["ib_time"].astype("int64") // NS
    return Counter(zip(seconds.tolist(), *(mine[f].tolist() for f in fields), strict=True))


@pytest.fixture
async def truth(gateway: GatewaySimulator) -> AsyncIterator[GroundTruth]:
    async with watched(gateway) as found:
        yield found


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_history_over_the_wire_equals_what_an_ib_client_received_live(
    make_server: ServerFactory, transport: str
):
    async with fast_market(make_server) as (_, truth, server):  # pacing scaled down
        first, end = await market_past(truth, 4)
        async with AsyncClient(server.url, transport) as client:
            frame = await client.history("ES", ("bid_ask", "all_last"), first, end, progress=False)
        # the same ticks the server gives as JSON lines, typed the same way
        messages = await get_lines(
            server, "/v2/history/ES", tick_types="bid_ask,all_last", start=first, end=end
        )
    for kind in KINDS:
        expected = truth_keys(truth, kind, first, end)
        assert sum(expected.values()) > 50
        assert truth_frame_keys(frame, kind, first, end) == expected, kind
    info = frame.attrs["history"]
    assert info["from_ib"] == len(frame) and info["from_store"] == 0 and info["missing"] == []
    assert info["requests"] >= 2
    assert (info["start_ns"], info["end_ns"]) == (first * NS, end * NS)
    assert frame.attrs["contracts"][0]["contract_id"] == ES_ID
    assert frame.index.is_monotonic_increasing and (frame["sequence"] == 0).all()
    expected_frame = ticks_to_frame(ticks_of(messages))
    pd.testing.assert_frame_equal(frame, expected_frame.set_axis(frame.index), check_flags=False)
    assert (frame.index == expected_frame.index).all()


def test_the_blocking_client_returns_the_quotes_it_saw_live_with_a_progress_bar(capsys):
    with threaded_server() as server, Client(server.url) as client:
        live = client.collect("ES", "bid_ask", limit=500, progress=False)  # the market's past
        seconds = live["ib_time"].astype("int64") // NS
        first, end = int(seconds.iloc[0]) + 1, int(seconds.iloc[-1])
        frame = client.history("ES", "bid_ask", start=f"{end - first}s", end=end, progress=True)
    assert len(frame) > 50 and set(frame["tick_type"].astype(str)) == {"bid_ask"}
    held = live[(seconds >= first).to_numpy() & (seconds < end).to_numpy()]
    fields = ["ib_time", "bid_price", "bid_size", "ask_price", "ask_size"]
    assert frame[fields].to_numpy().tolist() == held[fields].to_numpy().tolist()
    assert "history ES" in capsys.readouterr().err  # the bar drew on stderr


async def test_a_refused_tick_type_makes_a_partial_answer_that_says_so(
    make_server: ServerFactory, gateway: GatewaySimulator, truth: GroundTruth
):
    server = await make_server()
    first, end = await market_past(truth, 2)
    gateway.fail_next("historical_ticks", 354)  # the first page asked: one tick type's
    async with AsyncClient(server.url) as client:
        with pytest.warns(HistoryIncompleteWarning, match=r"missing: .*\(IB 354"):
            frame = await client.history("ES", ("bid_ask", "all_last"), first, end)
    (missing,) = frame.attrs["history"]["missing"]
    assert missing["ib_code"] == 354
    assert set(frame["tick_type"].astype(str)) == {"bid_ask", "all_last"} - {missing["tick_type"]}


async def test_no_ticks_and_a_refusal_raises_ibs_error(
    make_server: ServerFactory, gateway: GatewaySimulator
):
    server = await make_server()
    end = int(time.time()) - 1
    gateway.fail_next("historical_ticks", 354)
    async with AsyncClient(server.url) as client:
        with pytest.raises(StreamError) as caught:
            await client.history("ES", "last", end - 2, end)
        assert caught.value.details["ib_code"] == 354
        with pytest.raises(ContractNotFound):
            await client.history("NOSUCHTHING", "last", end - 2, end)
