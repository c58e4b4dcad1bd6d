"""The tick frame schema and every path into it: rows, wire payloads, FrameBuilder, TickBuffer."""

from __future__ import annotations

import asyncio
import io
import threading

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from ibstream.client import frames
from ibstream.client.buffer import FrameBuilder, TickBuffer
from ibstream.client.frames import (
    TICK_COLUMNS,
    TickRowError,
    conform_ticks,
    empty_ticks,
    frame_from_payloads,
    ticks_to_frame,
)
from ibstream.model import Tick, TickType
from ibstream.protocol.encode import encode_tick_tail, tick_prefix

ES = 637533641
T0 = 1_764_117_667_312_004_117
CATEGORIES = ["last", "all_last", "bid_ask", "mid_point"]


def quote(i: int, recv_ns: int | None = None) -> dict:
    return {
        "contract_id": ES,
        "tick_type": "bid_ask",
        "sequence": i,
        "recv_ns": T0 + i * 1_000_000 if recv_ns is None else recv_ns,
        "bid_price": 5893.5 + 0.25 * (i % 7),
        "bid_size": float(i % 11 + 1),
        "ask_price": 5893.75 + 0.25 * (i % 7),
        "ask_size": float(i % 5 + 1),
    }


def trade(i: int) -> dict:
    return {
        "contract_id": ES,
        "tick_type": "last",
        "sequence": i,
        "recv_ns": T0 + i * 1_000_000,
        "ib_time": (T0 + i) // 10**9,
        "price": 5893.75,
        "size": 2.0,
        "exchange": "CME",
        "conditions": "I",
    }


def mixed(n: int) -> list[dict]:
    return [trade(i) if i % 3 == 0 else quote(i) for i in range(n)]


def wire(ticks: list[Tick]) -> list[bytes]:
    """Tick messages as the server encodes them."""
    return [
        tick_prefix(f"{t.contract_id}_{t.tick_type}_1_ab") + encode_tick_tail(t, i)
        for i, t in enumerate(ticks)
    ]


def parquet_round_trip(frame: pd.DataFrame) -> pd.DataFrame:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return pd.read_parquet(io.BytesIO(buffer.getvalue()))


# --- schema -------------------------------------------------------------------------------


def test_schema_values_and_arrival_order() -> None:
    rows = [
        trade(0),
        quote(1),
        {"contract_id": 7, "tick_type": "MidPoint", "recv_ns": T0 - 5, "mid_price": 1.25},
        {"contract_id": 7, "tick_type": "AllLast", "recv_ns": T0 - 5, "price": 2.0, "size": 1.0},
    ]
    frame = ticks_to_frame(rows)
    assert list(frame.columns) == list(TICK_COLUMNS)
    assert frame.dtypes.to_dict() == TICK_COLUMNS
    assert frame["tick_type"].cat.categories.tolist() == CATEGORIES
    assert not frame["tick_type"].cat.ordered
    assert frame["exchange"].dtype == pd.StringDtype() and frame["exchange"].dtype.na_value is pd.NA
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.name == "time"
    assert str(frame.index.dtype) == "datetime64[ns, UTC]"
    # arrival order kept although the last two stamps go back in time
    assert frame.index.asi8.tolist() == [T0, T0 + 1_000_000, T0 - 5, T0 - 5]
    assert frame["tick_type"].tolist() == ["last", "bid_ask", "mid_point", "all_last"]
    assert frame["sequence"].tolist() == [0, 1, 0, 0]  # missing sequence -> 0
    assert frame.loc[:, "price"].iloc[0] == 5893.75 and np.isnan(frame["price"].iloc[1])
    assert frame["bid_price"].iloc[1] == 5893.75 and frame["mid_price"].iloc[2] == 1.25
    assert frame["exchange"].iloc[0] == "CME" and frame["exchange"].iloc[1:].isna().all()


def test_empty_frame_has_the_schema() -> None:
    empty = empty_ticks()
    assert len(empty) == 0 and empty.dtypes.to_dict() == TICK_COLUMNS
    assert str(empty.index.dtype) == "datetime64[ns, UTC]" and empty.index.name == "time"
    assert_frame_equal(ticks_to_frame([]), empty)
    assert_frame_equal(frame_from_payloads([]), empty)
    assert_frame_equal(FrameBuilder().to_frame(), empty)
    assert_frame_equal(pd.concat([empty, ticks_to_frame(mixed(3))]), ticks_to_frame(mixed(3)))


def test_parquet_round_trip() -> None:
    frame = ticks_to_frame(mixed(100))
    assert_frame_equal(parquet_round_trip(frame), frame)
    only_quotes = ticks_to_frame([quote(i) for i in range(5)])  # all-NaN trade columns, <NA>
    assert only_quotes["price"].isna().all() and only_quotes["exchange"].isna().all()
    assert_frame_equal(parquet_round_trip(only_quotes), only_quotes)


def test_empty_frame_parquet_round_trip_needs_conform() -> None:
    """Parquet stores a dictionary only with data: the empty frame's categories are lost."""
    empty = empty_ticks()
    back = parquet_round_trip(empty)
    assert_frame_equal(back, empty, check_categorical=False)  # all but the categories
    assert_frame_equal(conform_ticks(back), empty)
    with pytest.raises(ValueError, match="missing columns"):
        conform_ticks(back.drop(columns="exchange"))


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ({"tick_type": "quote"}, "tick_type", "unknown tick type"),
        ({"tick_type": None}, "tick_type", "missing"),
        ({"recv_ns": None}, "recv_ns", "missing"),
        ({"contract_id": None}, "contract_id", "missing"),
        ({"bid_price": "abc"}, "bid_price", "not a number"),
        ({"sequence": [1, 2]}, "sequence", "not a number"),
        ({"exchange": 5}, "exchange", "not a string"),
    ],
)
def test_bad_rows_are_named(bad: dict, field: str, words: str) -> None:
    rows = mixed(3)
    rows.append({**quote(3), **bad})
    expected = rf"tick row 3, field '{field}'.*{words}"
    with pytest.raises(TickRowError, match=expected) as caught:
        ticks_to_frame(rows)
    assert isinstance(caught.value, ValueError) and caught.value.row == 3
    with pytest.raises(ValueError, match=expected):
        FrameBuilder().extend(rows)
    with pytest.raises(ValueError, match=expected):
        frame_from_payloads([orjson.dumps({"type": "tick", "data": r}) for r in rows])


def test_tick_type_spellings() -> None:
    spellings = ["BidAsk", "bidask", "Bid-Ask", " LAST ", TickType.MID_POINT, "allLast"]
    rows = [{**quote(i), "tick_type": s} for i, s in enumerate(spellings)]
    expected = ["bid_ask", "bid_ask", "bid_ask", "last", "mid_point", "all_last"]
    assert ticks_to_frame(rows)["tick_type"].tolist() == expected
    messages = [orjson.dumps({"type": "tick", "data": r}) for r in rows]
    assert frame_from_payloads(messages)["tick_type"].tolist() == expected


def test_payloads_that_are_not_tick_messages() -> None:
    good = orjson.dumps({"type": "tick", "data": quote(0)})
    with pytest.raises(ValueError, match="tick row 1: is not a tick message"):
        frame_from_payloads([good, b'{"type":"info","data":{"status":"resumed"}}'])
    with pytest.raises(ValueError, match="tick row 1: is not JSON"):
        frame_from_payloads([good, b'{"type":"tick",'])
    with pytest.raises(ValueError, match="tick row 0: is not a tick message"):
        frame_from_payloads([b'{"type":"tick"}'])


# --- wire payloads -----------------------------------------------------------------------


def test_payloads_from_the_server_encoder() -> None:
    ticks = [
        Tick(ES, TickType.BID_ASK, T0, bid_price=1.5, bid_size=3.0, ask_price=1.75, ask_size=1.0),
        Tick(
            ES,
            TickType.LAST,
            T0 + 1,
            price=1.75,
            size=2.0,
            exchange="CME",
            conditions="I",
        ),
        Tick(ES, TickType.ALL_LAST, T0 + 1, price=1.5, size=1.0),
        Tick(ES, TickType.MID_POINT, T0 + 2, mid_price=1.625),
    ]
    payloads = wire(ticks)
    expected = ticks_to_frame([orjson.loads(p)["data"] for p in payloads])
    assert_frame_equal(frame_from_payloads(payloads), expected)
    assert_frame_equal(frame_from_payloads([p.decode() for p in payloads]), expected)
    pretty = [orjson.dumps(orjson.loads(p), option=orjson.OPT_INDENT_2) for p in payloads]
    assert_frame_equal(frame_from_payloads(pretty), expected)  # messages spanning lines
    assert expected["sequence"].tolist() == [0, 1, 2, 3]


def test_wire_input_takes_the_arrow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Well-formed rows and messages never fall back to the slow per-row Python path."""

    def fallback(*args: object) -> None:
        raise AssertionError("took the Python path")

    monkeypatch.setattr(frames, "_columns_in_python", fallback)
    monkeypatch.setattr(frames, "_decode", fallback)
    rows = [*mixed(20), {"contract_id": 1, "tick_type": "MidPoint", "recv_ns": 1, "mid_price": 2.0}]
    expected = ticks_to_frame(rows)
    payloads = [orjson.dumps({"type": "tick", "stream_id": "s", "data": r}) for r in rows]
    assert_frame_equal(frame_from_payloads(payloads), expected)
    builder, buffer = FrameBuilder(chunk_rows=8), TickBuffer(max_ticks=100)
    for row in rows:
        builder.append(row)
        buffer.append(row)
    assert_frame_equal(builder.to_frame(), expected)
    assert_frame_equal(buffer.to_frame(), expected)


async def test_payloads_received_over_websocket(server, ws_client) -> None:
    """Raw tick messages off a real WebSocket, from the simulator through the server."""
    client = await ws_client(server)
    await client.subscribe("ES", ["bid_ask", "last"])
    raw: list[str] = []
    async with asyncio.timeout(20):
        while len(raw) < 60:
            message = await client.conn.recv()
            if orjson.loads(message)["type"] == "tick":
                raw.append(message)
    frame = frame_from_payloads(raw)
    assert_frame_equal(frame, ticks_to_frame([orjson.loads(m)["data"] for m in raw]))
    assert frame.dtypes.to_dict() == TICK_COLUMNS and len(frame) == 60
    assert set(frame["tick_type"]) <= {"bid_ask", "last"} and (frame["contract_id"] == ES).all()


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
rows_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "contract_id": st.integers(1, 2**62),
            "tick_type": st.sampled_from([*CATEGORIES, "BidAsk", "Last"]),
            "recv_ns": st.integers(0, 2**63 - 1),
        },
        optional={
            "sequence": st.integers(0, 2**63 - 1),
            **{name: finite for name in ["price", "size", "bid_price", "bid_size", "ask_price"]},
            "mid_price": finite,
            "exchange": st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
            "ib_time": st.integers(0, 2**33),  # epoch seconds up to the year 2242
        },
    ),
    max_size=30,
)


@settings(max_examples=100, deadline=None)
@given(rows=rows_strategy, chunk=st.integers(1, 7))
def test_every_path_builds_the_same_frame(rows: list[dict], chunk: int) -> None:
    expected = ticks_to_frame(rows)
    payloads = [orjson.dumps({"type": "tick", "stream_id": "s", "data": r}) for r in rows]
    assert_frame_equal(frame_from_payloads(payloads), expected)
    builder = FrameBuilder(chunk_rows=chunk)
    for row in rows[: len(rows) // 2]:
        builder.append(row)
    builder.extend(iter(rows[len(rows) // 2 :]))
    assert len(builder) == len(rows)
    assert_frame_equal(builder.to_frame(), expected)
    if rows:
        assert_frame_equal(parquet_round_trip(expected), expected)
    as_python = ticks_to_frame([{**r, "tick_type": f" {r['tick_type'].upper()}"} for r in rows])
    assert_frame_equal(as_python, expected)  # the lenient Python path agrees with Arrow's


# --- FrameBuilder ------------------------------------------------------------------------


def test_builder_frames_are_independent_copies() -> None:
    builder = FrameBuilder(chunk_rows=4)
    builder.extend(mixed(10))
    first = builder.to_frame()
    first.loc[first.index[0], "price"] = -1.0
    assert builder.to_frame()["price"].iloc[0] == 5893.75
    builder.clear()
    assert len(builder) == 0 and len(builder.to_frame()) == 0


def test_builder_reports_a_bad_value_when_its_chunk_is_typed_and_drops_it() -> None:
    builder = FrameBuilder(chunk_rows=3)
    with pytest.raises(TickRowError, match="tick row 4, field 'tick_type'"):
        builder.extend([quote(0)] * 4 + [{**quote(4), "tick_type": "nope"}])
    assert len(builder) == 0  # extend is all or nothing
    builder.append(quote(0))
    with pytest.raises(ValueError, match="tick row 1, field 'recv_ns'"):
        builder.append({**quote(1), "recv_ns": None})  # checked on append
    builder.append({**quote(1), "price": "abc"})  # found only when the chunk is typed
    with pytest.raises(TickRowError, match="tick row 1, field 'price'"):
        builder.append(quote(2))
    assert len(builder) == 2
    assert builder.to_frame()["sequence"].tolist() == [0, 2]


# --- TickBuffer --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({}, "needs max_ticks and/or max_seconds"),
        ({"max_ticks": 0}, "max_ticks must be a positive integer"),
        ({"max_ticks": 2.5}, "max_ticks must be a positive integer"),
        ({"max_ticks": True}, "max_ticks must be a positive integer"),
        ({"max_seconds": -1}, "max_seconds must be a positive number"),
        ({"max_seconds": float("nan")}, "max_seconds must be a positive number"),
        ({"max_ticks": 10, "max_seconds": 0}, "max_seconds must be a positive number"),
    ],
)
def test_buffer_bounds_are_checked(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        TickBuffer(**kwargs)


def test_buffer_bounds_accept_numpy_numbers() -> None:
    buffer = TickBuffer(max_ticks=np.int64(5), max_seconds=np.float32(0.5))
    assert (buffer.max_ticks, buffer.max_seconds) == (5, 0.5)


def test_a_million_ticks_through_a_buffer_of_a_thousand() -> None:
    buffer = TickBuffer(max_ticks=1_000)
    for start in range(0, 1_000_000, 50_000):
        buffer.extend(quote(i) for i in range(start, start + 49_000))
        for i in range(start + 49_000, start + 50_000):  # some one at a time
            buffer.append(quote(i))
    frame = buffer.to_frame()
    assert_frame_equal(frame, ticks_to_frame([quote(i) for i in range(999_000, 1_000_000)]))
    assert buffer.total == 1_000_000 and len(buffer) == 1_000 and buffer.capacity == 1_000
    frame.iloc[-1, frame.columns.get_loc("bid_price")] = -1.0  # the frame is the caller's own
    assert buffer.to_frame()["bid_price"].iloc[-1] == quote(999_999)["bid_price"]


def test_time_window_keeps_the_last_seconds_and_bounded_memory() -> None:
    buffer = TickBuffer(max_seconds=0.5)  # ticks 1 ms apart: a window holds 501
    rows = [quote(i) for i in range(200_000)]
    for start in range(0, len(rows), 7_000):
        buffer.extend(rows[start : start + 7_000])
    assert_frame_equal(buffer.to_frame(), ticks_to_frame(rows[-501:]))
    assert buffer.total == 200_000 and len(buffer) == 501
    assert buffer.capacity <= 2 * (501 + 7_000)  # never the 200,000 seen
    buffer.append(quote(0, recv_ns=rows[-1]["recv_ns"] + 10**9))  # a second later
    assert buffer.to_frame()["sequence"].tolist() == [0]
    buffer.clear()
    assert len(buffer) == 0 and buffer.total == 200_001 and len(buffer.to_frame()) == 0


@settings(max_examples=100, deadline=None)
@given(
    batches=st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=25),
    gaps=st.lists(st.integers(0, 3_000_000), min_size=1, max_size=50),
    max_ticks=st.none() | st.integers(1, 60),
    max_seconds=st.none() | st.floats(0.001, 0.05),
)
def test_buffer_matches_a_slice_of_everything_appended(
    batches: list[tuple[bool, int]],
    gaps: list[int],
    max_ticks: int | None,
    max_seconds: float | None,
) -> None:
    if max_ticks is None and max_seconds is None:
        max_ticks = 5
    buffer = TickBuffer(max_ticks=max_ticks, max_seconds=max_seconds)
    seen: list[dict] = []
    recv_ns = T0
    for one_by_one, size in batches:
        rows = []
        for _ in range(size):
            recv_ns += gaps[len(seen) % len(gaps)]
            rows.append(quote(len(seen) + len(rows), recv_ns=recv_ns))
        if one_by_one:
            for row in rows:
                buffer.append(row)
        else:
            buffer.extend(rows)
        seen += rows
        window = seen[-max_ticks:] if max_ticks else seen
        if max_seconds is not None and seen:
            cutoff = seen[-1]["recv_ns"] - round(max_seconds * 1e9)
            window = [r for r in window if r["recv_ns"] >= cutoff]
        assert_frame_equal(buffer.to_frame(), ticks_to_frame(window))
        assert buffer.total == len(seen) and len(buffer) == len(window)


def test_readers_see_whole_runs_while_a_writer_appends() -> None:
    buffer = TickBuffer(max_ticks=500)
    done = threading.Event()
    problems: list[str] = []

    def read() -> None:
        while not done.is_set():
            seq = buffer.to_frame()["sequence"].to_numpy()
            if len(seq) > 500 or (len(seq) and (np.diff(seq) != 1).any()):
                problems.append(f"snapshot of {len(seq)} ticks is not one run")

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for i in range(100_000):
            buffer.append(quote(i))
    finally:
        done.set()
        for reader in readers:
            reader.join()
    assert not problems, problems[:3]
    assert buffer.to_frame()["sequence"].tolist() == list(range(99_500, 100_000))
