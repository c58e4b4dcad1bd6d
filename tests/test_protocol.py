"""Validation of client messages and SSE parameters: every defect names the field."""

from __future__ import annotations

import orjson
import pytest

from ibstream.errors import ErrorCode, StreamError
from ibstream.model import TickType
from ibstream.protocol.validate import CONTROL_TYPES, MessageError, parse_message, parse_sse_params


def test_subscribe_full():
    msg = parse_message(
        '{"type":"subscribe","id":"a1","data":{"contract_id":"AAPL","tick_types":["BidAsk","last"],'
        '"config":{"limit":5,"timeout_seconds":2.5,"resume_from":{"bid_ask":0,"Last":3}}}}'
    )
    assert msg.type == "subscribe" and msg.request_id == "a1"
    sub = msg.subscribe
    assert sub is not None
    assert sub.contract == "AAPL"
    assert sub.tick_types == [TickType.BID_ASK, TickType.LAST]
    assert (sub.limit, sub.timeout) == (5, 2.5)
    assert sub.resume_from == {TickType.BID_ASK: 0, TickType.LAST: 3}


@pytest.mark.parametrize(
    ("resume", "text"),
    [
        ("5", "needs exactly one tick type"),
        ('{"mid_point": 5}', "one of the subscribed tick types"),
        ('{"bid_ask": -1}', "a sequence number"),
    ],
)
def test_resume_from_must_say_where_each_stream_stopped(resume, text):
    config = '"config":{"resume_from":' + resume + "}"
    raw = (
        '{"type":"subscribe","id":"r","data":{"contract_id":"ES","tick_types":["bid_ask","last"],'
        + config
        + "}}"
    )
    with pytest.raises(StreamError) as info:
        parse_message(raw)
    assert info.value.code is ErrorCode.INVALID_MESSAGE and text in info.value.message


def test_subscribe_minimal_and_conid_forms():
    assert (
        parse_message(
            b'{"type":"subscribe","data":{"contract_id":265598,"tick_types":["last"]}}'
        ).subscribe.contract
        == 265598
    )
    msg = parse_message(
        '{"type":"subscribe","id":7,"data":{"contract_id":" 265598 ","tick_types":["mid_point"]}}'
    )
    assert msg.subscribe.contract == 265598 and msg.request_id == 7


@pytest.mark.parametrize("kind", ["unsubscribe_all", "ping"])
def test_simple_types(kind):
    assert parse_message(f'{{"type":"{kind}"}}').type == kind


def test_ping_timestamp_and_unsubscribe():
    assert parse_message('{"type":"ping","data":{"timestamp":123}}').data["timestamp"] == 123
    assert parse_message('{"type":"unsubscribe","data":{"stream_id":"x_1"}}').stream_id == "x_1"


def test_control_types():
    assert parse_message('{"type":"stats","id":"s"}', CONTROL_TYPES).type == "stats"
    with pytest.raises(MessageError, match="unknown message type 'subscribe'"):
        parse_message('{"type":"subscribe","data":{}}', CONTROL_TYPES)


@pytest.mark.parametrize(
    ("raw", "field", "text"),
    [
        ('{"type":"subscribe",', None, "malformed JSON"),
        ("[1,2]", None, "JSON object"),
        ('{"id":"x"}', "type", "field 'type' must be one of"),
        ('{"type":"subscrib","id":"x"}', "type", "unknown message type 'subscrib'"),
        ('{"type":"ping","extra":1}', "extra", "unknown field 'extra'"),
        ('{"type":"ping","id":true}', "id", "field 'id' must be a string"),
        ('{"type":"ping","id":{"a":1}}', "id", "field 'id'"),
        ('{"type":"subscribe"}', "data", "field 'data' must be an object; missing"),
        ('{"type":"subscribe","data":[]}', "data", "field 'data' must be an object"),
        ('{"type":"subscribe","data":{"tick_types":["last"]}}', "data.contract_id", "missing"),
        (
            '{"type":"subscribe","data":{"contract_id":"","tick_types":["last"]}}',
            "data.contract_id",
            "conId",
        ),
        (
            '{"type":"subscribe","data":{"contract_id":-5,"tick_types":["last"]}}',
            "data.contract_id",
            "got -5",
        ),
        (
            '{"type":"subscribe","data":{"contract_id":1.5,"tick_types":["last"]}}',
            "data.contract_id",
            "1.5",
        ),
        ('{"type":"subscribe","data":{"contract_id":"AAPL"}}', "data.tick_types", "missing"),
        (
            '{"type":"subscribe","data":{"contract_id":"AAPL","tick_types":["last"],"foo":1}}',
            "data.foo",
            "unknown field 'data.foo'",
        ),
        (
            '{"type":"subscribe","data":{"contract_id":"AAPL","tick_types":["last"],"config":3}}',
            "data.config",
            "must be an object",
        ),
        (
            '{"type":"subscribe","data":{"contract_id":"AAPL","tick_types":["last"],"config":{"limit":0}}}',
            "data.config.limit",
            "positive integer",
        ),
        (
            '{"type":"subscribe","data":{"contract_id":"AAPL","tick_types":["last"],"config":{"limit":true}}}',
            "data.config.limit",
            "positive integer",
        ),
        (
            '{"type":"subscribe","data":{"contract_id":"AAPL","tick_types":["last"],"config":{"limit":"5"}}}',
            "data.config.limit",
            "positive integer",
        ),
        (
            '{"type":"subscribe","data":{"contract_id":"AAPL","tick_types":["last"],'
            '"config":{"timeout_seconds":-1}}}',
            "data.config.timeout_seconds",
            "positive number",
        ),
        (
            '{"type":"subscribe","data":{"contract_id":"AAPL","tick_types":["last"],'
            '"config":{"resume_from":-1}}}',
            "data.config.resume_from",
            "sequence number",
        ),
        (
            '{"type":"subscribe","data":{"contract_id":"AAPL","tick_types":["last"],'
            '"config":{"limt":5}}}',
            "data.config.limt",
            "unknown field 'data.config.limt'",
        ),
        ('{"type":"unsubscribe","data":{}}', "data.stream_id", "missing"),
        ('{"type":"unsubscribe","data":{"stream_id":5}}', "data.stream_id", "got 5"),
        ('{"type":"unsubscribe_all","data":{"x":1}}', "data.x", "unknown field"),
        ('{"type":"ping","data":{"ts":1}}', "data.ts", "allowed here: timestamp"),
    ],
)
def test_invalid_messages(raw, field, text):
    with pytest.raises(MessageError) as info:
        parse_message(raw)
    err = info.value
    assert err.code == ErrorCode.INVALID_MESSAGE
    assert text in err.message
    if field is not None:
        assert err.details["field"] == field


def test_request_id_is_kept_on_errors():
    with pytest.raises(MessageError) as info:
        parse_message(
            '{"type":"subscribe","id":"q9","data":{"contract_id":"AAPL","tick_types":["x"]}}'
        )
    assert info.value.request_id == "q9"
    assert info.value.code == ErrorCode.INVALID_TICK_TYPE
    assert info.value.details["supported"] == [t.value for t in TickType]


@pytest.mark.parametrize("bad", ["[]", '["last","nope"]', "[5]"])
def test_bad_tick_types(bad):
    with pytest.raises(MessageError) as info:
        parse_message('{"type":"subscribe","data":{"contract_id":"AAPL","tick_types":' + bad + "}}")
    assert info.value.code == ErrorCode.INVALID_TICK_TYPE
    assert info.value.details["field"].startswith("data.tick_types")


@pytest.mark.parametrize("bad", ['"last"', '"bid_ask,last"', "5", "null", '{"a":1}'])
def test_tick_types_must_be_a_list(bad):
    """A bare string or a number is not a list: INVALID_MESSAGE naming the field."""
    with pytest.raises(MessageError) as info:
        parse_message('{"type":"subscribe","data":{"contract_id":"AAPL","tick_types":' + bad + "}}")
    err = info.value
    assert err.code == ErrorCode.INVALID_MESSAGE
    assert err.details["field"] == "data.tick_types"
    assert "a list" in err.details["expected"] and "tick_types" in err.message


def test_batch_ms():
    def sub(batch: str):
        return parse_message(
            '{"type":"subscribe","data":{"contract_id":"ES","tick_types":["last"],'
            '"config":{"batch_ms":' + batch + "}}}"
        ).subscribe

    assert sub("50").batch_ms == 50.0 and sub("0.5").batch_ms == 0.5
    assert sub("0").batch_ms is None  # 0: one message per tick
    for bad in ("-1", "1001", '"50"', "true"):
        with pytest.raises(MessageError) as info:
            sub(bad)
        assert info.value.details["field"] == "data.config.batch_ms", bad
    assert parse_sse_params("ES", "last", [("batch_ms", "20")]).batch_ms == 20.0
    assert parse_sse_params("ES", "last", []).batch_ms is None
    with pytest.raises(MessageError, match="'batch_ms'"):
        parse_sse_params("ES", "last", [("batch_ms", "2000")])


def test_sse_params_single_and_multi():
    req = parse_sse_params("265598", "BidAsk", [("limit", "10"), ("timeout", "1.5")])
    assert (req.contract, req.tick_types, req.limit, req.timeout) == (
        265598,
        [TickType.BID_ASK],
        10,
        1.5,
    )
    req = parse_sse_params(
        "AAPL", None, [("tick_types", "bid_ask,last")], last_event_id="bid_ask:41,last:7"
    )
    assert req.tick_types == [TickType.BID_ASK, TickType.LAST]
    assert req.resume_from == {TickType.BID_ASK: 41, TickType.LAST: 7}
    req = parse_sse_params("AAPL", "last", [("resume_from", "7")], last_event_id="41")
    assert req.resume_from == {TickType.LAST: 7}  # the explicit parameter wins over the header
    with pytest.raises(StreamError, match="exactly one tick type"):
        parse_sse_params("AAPL", None, [("tick_types", "bid_ask,last")], last_event_id="41")


@pytest.mark.parametrize(
    ("tick_type", "params", "code", "text"),
    [
        (
            "last",
            [("limit", "0")],
            ErrorCode.INVALID_MESSAGE,
            "field 'limit' must be a positive integer",
        ),
        ("last", [("limit", "x")], ErrorCode.INVALID_MESSAGE, "'limit'"),
        ("last", [("limit", "2.5")], ErrorCode.INVALID_MESSAGE, "'limit'"),
        ("last", [("timeout", "-3")], ErrorCode.INVALID_MESSAGE, "'timeout'"),
        ("last", [("timeout", "nan")], ErrorCode.INVALID_MESSAGE, "'timeout'"),
        ("last", [("resume_from", "a")], ErrorCode.INVALID_MESSAGE, "'resume_from'"),
        ("last", [("bogus", "1")], ErrorCode.INVALID_MESSAGE, "unknown query parameter 'bogus'"),
        ("last", [("tick_types", "last")], ErrorCode.INVALID_MESSAGE, "unknown query parameter"),
        ("last", [("limit", "1"), ("limit", "2")], ErrorCode.INVALID_MESSAGE, "more than once"),
        ("trades", [], ErrorCode.INVALID_TICK_TYPE, "unknown tick type 'trades'"),
        (None, [], ErrorCode.INVALID_MESSAGE, "field 'tick_types'"),
        (None, [("tick_types", "last,bad")], ErrorCode.INVALID_TICK_TYPE, "'bad'"),
    ],
)
def test_sse_params_invalid(tick_type, params, code, text):
    with pytest.raises(MessageError) as info:
        parse_sse_params("AAPL", tick_type, params)
    assert info.value.code == code
    assert text in info.value.message
    assert info.value.http_status == 400


def test_sse_bad_last_event_id():
    with pytest.raises(MessageError, match="Last-Event-ID"):
        parse_sse_params("AAPL", "last", [], last_event_id="abc")


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ('{"tick_types":["last"]}', "missing"),
        ('{"contract_id":null,"tick_types":["last"]}', "got null"),
    ],
)
def test_no_value_arrived_means_no_got(data, text):
    """Errors omit nulls like every message: nothing (or null) arrived, so `got` is absent."""
    with pytest.raises(MessageError) as info:
        parse_message('{"type":"subscribe","data":' + data + "}")
    assert info.value.details["field"] == "data.contract_id"
    assert "got" not in info.value.details and text in info.value.message


def test_an_infinite_number_is_shown_as_text_and_the_id_kept():
    with pytest.raises(MessageError) as info:
        parse_message(
            '{"type":"subscribe","id":7,"data":{"contract_id":"ES","tick_types":["last"],'
            '"config":{"timeout_seconds":-1e400}}}'
        )
    err = info.value
    assert err.request_id == 7 and err.details["got"] == "-inf" and "got -inf" in err.message


@pytest.mark.parametrize("spec", ["", "   ", "\t"])
def test_a_blank_contract_is_refused(spec):
    with pytest.raises(MessageError) as info:
        parse_message(
            orjson.dumps(
                {"type": "subscribe", "data": {"contract_id": spec, "tick_types": ["last"]}}
            )
        )
    assert info.value.details["field"] == "data.contract_id"


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe", "unsubscribe_all", "ping"])
def test_every_message_takes_the_top_level_timestamp_and_metadata(kind):
    data = {
        "subscribe": {"contract_id": "ES", "tick_types": ["last"]},
        "unsubscribe": {"stream_id": "s"},
    }.get(kind)
    msg = {"type": kind, "id": "m", "timestamp": "2025-01-15T10:30:00.123Z", "metadata": {"a": 1}}
    if data is not None:
        msg["data"] = data
    assert parse_message(orjson.dumps(msg)).timestamp == "2025-01-15T10:30:00.123Z"


def test_an_unknown_top_level_field_is_recoverable_and_named():
    with pytest.raises(MessageError) as info:
        parse_message('{"type":"ping","id":"q","sent_at":1}')
    err = info.value
    assert err.recoverable is True and err.request_id == "q"
    assert err.details["field"] == "sent_at" and "'sent_at'" in err.message
    assert "timestamp" in err.details["allowed"] and "metadata" in err.details["allowed"]
    with pytest.raises(MessageError) as info:  # deeper down: a typo in a known object
        parse_message('{"type":"ping","data":{"ts":1}}')
    assert info.value.recoverable is False


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ('{"resume_from":18446744073709551616}', "data.config.resume_from"),
        ('{"resume_from":{"last":9223372036854775808}}', "data.config.resume_from.last"),
        ('{"limit":9223372036854775808}', "data.config.limit"),
        ('{"timeout_seconds":1e12}', "data.config.timeout_seconds"),
    ],
)
def test_integers_beyond_their_bounds_are_refused_and_can_be_sent_back(config, field):
    with pytest.raises(MessageError) as info:
        parse_message(
            '{"type":"subscribe","data":{"contract_id":"ES","tick_types":["last"],"config":'
            + config
            + "}}"
        )
    details = info.value.details
    assert details["field"] == field
    sent = orjson.loads(orjson.dumps(info.value.body()))  # beyond 64 bits: as text
    assert str(sent["details"]["got"]) in config.replace("1e12", "1000000000000.0")
