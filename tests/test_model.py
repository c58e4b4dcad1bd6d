"""Tick types, contract specs, error bodies and the encode-once tick message."""

import orjson
import pytest

from ibstream.errors import ErrorCode, StreamError, from_ib_error
from ibstream.ib.contracts import parse_spec
from ibstream.model import Tick, TickType, iso_timestamp
from ibstream.protocol.encode import encode_tick_tail, message, tick_prefix


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("bid_ask", TickType.BID_ASK),
        ("BidAsk", TickType.BID_ASK),
        ("AllLast", TickType.ALL_LAST),
        ("last", TickType.LAST),
        ("MidPoint", TickType.MID_POINT),
        ("mid-point", TickType.MID_POINT),
    ],
)
def test_tick_type_accepts_wire_and_ib_names(raw, expected):
    assert TickType.parse(raw) is expected


@pytest.mark.parametrize("raw", ["trades", "", None, 3, "bid ask"])
def test_unknown_tick_type_is_invalid_tick_type(raw):
    with pytest.raises(StreamError) as info:
        TickType.parse(raw)
    assert info.value.code is ErrorCode.INVALID_TICK_TYPE
    assert "bid_ask" in info.value.message


def test_tick_type_list_merges_duplicates_and_rejects_empty():
    assert TickType.parse_list("bid_ask,last,BidAsk") == [TickType.BID_ASK, TickType.LAST]
    with pytest.raises(StreamError):
        TickType.parse_list([])


@pytest.mark.parametrize(
    "spec, fields",
    [
        (265598, {"conId": 265598}),
        ("12087792", {"conId": 12087792}),
        ("AAPL", {"symbol": "AAPL", "secType": "STK", "exchange": "SMART", "currency": "USD"}),
        ("EURUSD", {"symbol": "EUR", "currency": "USD", "secType": "CASH", "exchange": "IDEALPRO"}),
        (
            "eur.usd",
            {"symbol": "EUR", "currency": "USD", "secType": "CASH", "exchange": "IDEALPRO"},
        ),
        ("ES", {"symbol": "ES", "secType": "FUT", "exchange": "CME", "currency": "USD"}),
        ("ES:FUT:CME", {"symbol": "ES", "secType": "FUT", "exchange": "CME"}),
    ],
)
def test_contract_specs(spec, fields):
    assert parse_spec(spec) == fields


@pytest.mark.parametrize("spec", ["", "  ", "-5", "0", "AAPL:BOND", "A$PL", None])
def test_bad_contract_specs_say_what_is_expected(spec):
    with pytest.raises(StreamError) as info:
        parse_spec(spec)
    assert info.value.code is ErrorCode.CONTRACT_NOT_FOUND


def test_tick_message_is_encoded_once_and_spliced_per_stream():
    tick = Tick(
        265598, TickType.LAST, 1_700_000_000_123_456_789, price=230.5, size=100.0, exchange="NASDAQ"
    )
    tail = encode_tick_tail(tick, 7)
    a = orjson.loads(tick_prefix("s1") + tail)
    b = orjson.loads(tick_prefix("s2") + tail)
    assert a["stream_id"] == "s1" and b["stream_id"] == "s2"
    assert a["type"] == "tick" and a["timestamp"] == "2023-11-14T22:13:20.123Z"
    assert a["data"] == {
        "contract_id": 265598,
        "tick_type": "last",
        "sequence": 7,
        "recv_ns": 1_700_000_000_123_456_789,
        "price": 230.5,
        "size": 100.0,
        "exchange": "NASDAQ",
    }
    assert "bid_price" not in a["data"]  # nulls omitted


def test_message_omits_nulls_and_has_timestamp():
    msg = orjson.loads(
        message("info", {"status": "resumed", "details": None}, stream_id="x").payload
    )
    assert msg["data"] == {"status": "resumed"} and msg["stream_id"] == "x"
    assert len(iso_timestamp()) == 24


def test_ib_errors_map_to_protocol_codes_with_hints():
    err = from_ib_error(10190, "Max number of tick-by-tick requests has been reached.")
    assert err.code is ErrorCode.RATE_LIMIT_EXCEEDED and err.recoverable
    assert err.details["ib_code"] == 10190 and "slot" in err.message
    assert from_ib_error(354, "no perms").code is ErrorCode.PERMISSION_DENIED
    assert from_ib_error(200, "none").http_status == 404
    body = from_ib_error(200, "none").body()
    assert set(body) == {"code", "message", "details", "recoverable"}


ES_ID = 637533641


def test_every_tick_field_reaches_the_wire_and_nothing_else():
    values = {name: 1.5 for name in ("price", "size", "bid_price", "bid_size", "ask_price")}
    values |= {"ask_size": 2.0, "mid_price": 1.75, "exchange": "CME", "conditions": "I"}
    values |= {"ib_time": 1_764_000_000}
    tick = Tick(ES_ID, TickType.LAST, 5, **values)
    data = tick.data(3)
    assert set(data) == set(Tick.__dataclass_fields__) | {"sequence"}
    assert data == {
        "contract_id": ES_ID,
        "tick_type": "last",
        "recv_ns": 5,
        "sequence": 3,
        **values,
    }
    assert "ib_time" not in Tick(ES_ID, TickType.LAST, 5).data(1)  # none given, none sent
