"""The published protocol: /v2/schema (JSON Schema of every WebSocket message), /openapi.json
and /docs, and the suite-wide check that validates every message servers send against it."""

from __future__ import annotations

import asyncio
import functools
import json
import re

import fastjsonschema
import httpx
import jsonschema
import orjson
import pytest
import websockets
from hypothesis import given, settings
from hypothesis import strategies as st

from ibstream.protocol.encode import message
from ibstream.protocol.schema import message_types, side_schema
from ibstream.protocol.validate import CONTROL_TYPES, STREAM_TYPES, MessageError, parse_message
from tests.conftest import AAPL, WAIT, get_json, sse, sse_events
from tests.schema_check import SENT, SchemaCheck

CLIENT_TYPES = [
    "history",
    "history_cancel",
    "ping",
    "stats",
    "subscribe",
    "unsubscribe",
    "unsubscribe_all",
]
SERVER_TYPES = [
    "complete",
    "connected",
    "error",
    "history_complete",
    "history_progress",
    "history_started",
    "history_ticks",
    "info",
    "pong",
    "stats",
    "subscribed",
    "tick",
    "ticks",
    "unsubscribed",
]
TICK = {
    "type": "tick",
    "stream_id": "265598_last_1_ab",
    "timestamp": "2026-11-26T00:41:07.101Z",
    "data": {"contract_id": AAPL, "tick_type": "last", "sequence": 3, "recv_ns": 5, "price": 1.5},
}


async def test_schema_served_valid_and_complete(server):
    status, doc = await get_json(server, "/v2/schema")
    assert status == 200
    jsonschema.Draft202012Validator.check_schema(doc)
    for side, types in (("client", CLIENT_TYPES), ("server", SERVER_TYPES)):
        union = doc["$defs"][doc[side]["$ref"].rsplit("/", 1)[1]]
        assert sorted(union["discriminator"]["mapping"]) == types == message_types(side)
    check = jsonschema.Draft202012Validator({**doc["server"], "$defs": doc["$defs"]})
    check.validate(TICK)
    client = jsonschema.Draft202012Validator({**doc["client"], "$defs": doc["$defs"]})
    client.validate(
        {"type": "subscribe", "id": 1, "data": {"contract_id": "ES", "tick_types": ["last"]}}
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["data"].update(prize=1.5),  # a field the protocol does not have
        lambda m: m["data"].update(price=None),  # nulls are omitted, never sent
        lambda m: m["data"].pop("sequence"),
        lambda m: m.update(timestamp="yesterday"),
        lambda m: m.update(type="tock"),
    ],
)
def test_a_wrong_message_is_rejected(change):
    bad = orjson.loads(orjson.dumps(TICK))
    change(bad)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, side_schema("server"), cls=jsonschema.Draft202012Validator)
    assert SchemaCheck().problem(orjson.dumps(bad)) is not None


def test_client_schema_rejects_what_the_parser_rejects():
    validate = fastjsonschema.compile(side_schema("client"))
    validate({"type": "subscribe", "data": {"contract_id": AAPL, "tick_types": ["BidAsk"]}})
    for data in ({"contract_id": AAPL, "tick_types": "last"}, {"contract_id": AAPL}):
        with pytest.raises(fastjsonschema.JsonSchemaException):
            validate({"type": "subscribe", "data": data})


def test_the_suite_check_records_bad_messages():
    """The observer every fixture server gets: a direct call proves it can fail."""
    good = message("pong", {"server_timestamp": "2026-11-26T00:41:07.101Z"}, request_id=1)
    SENT(good.payload)
    SENT(b'{"type":"tick","stream_id":"x","timestamp":"2026-11-26T00:41:07.101Z","data":{}}')
    SENT(b"not json")
    failures = SENT.take()  # taken, so this test itself does not fail on them
    assert [payload[:9] for payload, _ in failures] == [b'{"type":"', b"not json"]
    assert "data" in failures[0][1]


async def test_messages_of_a_session_are_checked(server, ws_client):
    before = SENT.checked
    client = await ws_client(server)
    sub = await client.subscribe(AAPL, ["bid_ask", "last"], limit=3)
    await client.ticks(3, sub["streams"][0]["stream_id"])
    await client.request("ping", {"timestamp": 5})
    await client.request("unsubscribe_all")
    await client.request("subscribe", {"contract_id": "NOSUCH", "tick_types": ["last"]})
    async with sse(server, f"/v2/stream/{AAPL}/last?limit=2") as source:
        async for _event, _data, _id in sse_events(source):
            pass
    assert SENT.checked >= before + 8  # connected, subscribed, 3 ticks, pong, ... all seen
    assert not SENT.failures, SENT.failures


async def test_openapi_and_docs(server):
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
        spec = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path in (
        "/health",
        "/ws/stats",
        "/v2/contracts",
        "/v2/schema",
        "/v2/stream/{contract_id}",
        "/v2/stream/{contract_id}/{tick_type}",
    ):
        assert "get" in paths[path], path
    stream = paths["/v2/stream/{contract_id}"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert list(stream["responses"]["400"]["content"]) == ["application/json"]  # errors: JSON
    names = {p["name"] for p in stream["parameters"]}
    assert {"contract_id", "tick_types", "limit", "timeout", "resume_from", "batch_ms"} <= names
    one = {p["name"] for p in paths["/v2/stream/{contract_id}/{tick_type}"]["get"]["parameters"]}
    assert "tick_type" in one and "tick_types" not in one
    assert "503" in paths["/health"]["get"]["responses"]
    assert "Health" in spec["components"]["schemas"]
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    assert_sound_openapi(spec)


def assert_sound_openapi(spec: dict) -> None:
    """OpenAPI 3.1 checks without a validator package: schemas are valid JSON Schema, every
    `$ref` resolves and every path template parameter is declared."""
    schemas = spec["components"]["schemas"]
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    refs = re.findall(r'"\$ref":"#/components/schemas/([^"]+)"', orjson.dumps(spec).decode())
    assert refs and set(refs) <= set(schemas)
    for path, item in spec["paths"].items():
        for operation in item.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert set(re.findall(r"{(\w+)}", path)) == declared, path
            assert operation["responses"], path


# JSON Schema counts 1.0 as an integer; the server wants 1: the one known difference, so the
# floats drawn here have a fraction.
_fractional = st.floats(-1, 2000, allow_nan=False).filter(lambda x: not x.is_integer())
# Integers at every bound the schema sets: 64-bit sequences, limits and ids, 32-bit conIds.
_edges = st.sampled_from(
    [0, 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1, -(2**64)]
)
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2000),
    _edges,
    _fractional,
    st.sampled_from(["5", "", "last", 1e300]),
)
# The server takes tick types in any case, with `_`, `-` or nothing between the words.
TICK_NAMES = ["last", "BidAsk", "mid_point", "nope", "LAST", " bid-ask ", "alllast", "mid__point"]
# Contract ids as numbers and as digits, around IB's 32-bit conId range.
SPECS = ["AAPL", "", " ", "X" * 65, "0", " 00265598 ", "2147483647", "2147483648", "9" * 30, "1x"]
# Top-level fields of the original v2 protocol (timestamp, metadata) and unknown ones.
_top = {
    "id": st.one_of(st.integers(-(2**40), 2**40), _edges, st.text(max_size=3), st.booleans()),
    "timestamp": st.one_of(
        st.sampled_from(["2025-01-15T10:30:00.123Z", "", "T" * 65, None]), _values
    ),
    "metadata": st.one_of(st.none(), st.dictionaries(st.text(max_size=3), _values), _values),
    "sent_at": _values,
}
_subscribe = st.fixed_dictionaries(
    {
        "type": st.just("subscribe"),
        "data": st.fixed_dictionaries(
            {
                "contract_id": st.one_of(
                    st.integers(-2, 3), _edges, st.sampled_from(SPECS), _fractional
                ),
                "tick_types": st.one_of(
                    st.lists(st.sampled_from(TICK_NAMES), max_size=3),
                    st.sampled_from(["last", 5]),
                ),
            },
            optional={
                "config": st.fixed_dictionaries(
                    {},
                    optional={
                        "limit": _values,
                        "timeout_seconds": _values,
                        "batch_ms": _values,
                        "typo": _values,
                    },
                )
            },
        ),
    },
    optional=_top,
)
# resume_from on one tick type: a number or {tick_type: number} (which types a position may
# name is the parser's business beyond the schema)
_resume = st.fixed_dictionaries(
    {
        "type": st.just("subscribe"),
        "data": st.fixed_dictionaries(
            {
                "contract_id": st.just(AAPL),
                "tick_types": st.just(["last"]),
                "config": st.fixed_dictionaries(
                    {"resume_from": st.one_of(_values, st.fixed_dictionaries({"last": _values}))}
                ),
            }
        ),
    },
    optional=_top,
)
_others = st.fixed_dictionaries(
    {"type": st.sampled_from(["ping", "unsubscribe", "unsubscribe_all"])},
    optional={
        **_top,
        "data": st.one_of(
            st.fixed_dictionaries({}, optional={"timestamp": _values, "stream_id": _values}),
            st.fixed_dictionaries({"stream_id": st.sampled_from(["s", "", "s" * 129])}),
        ),
    },
)


@settings(max_examples=600, deadline=None)
@given(st.one_of(_subscribe, _resume, _others))
def test_schema_and_parser_agree(msg):
    """The published client schema and the validation are the same models: they accept and
    reject the same messages."""
    validate = _client_validator()
    try:
        validate(msg)
        schema_ok = True
    except fastjsonschema.JsonSchemaException:
        schema_ok = False
    try:
        parse_message(json.dumps(msg))
        parser_ok = True
    except MessageError:
        parser_ok = False
    assert schema_ok == parser_ok, msg


@functools.cache
def _client_validator():
    return fastjsonschema.compile(side_schema("client"))


def test_the_published_tick_names_exactly_the_fields_a_tick_sends():
    """`TickData` (schema) and `Tick.data` (wire) describe one shape twice: keep them equal."""
    from ibstream.model import Tick, TickType
    from ibstream.protocol.messages import TickData

    every = Tick(1, TickType.LAST, 1, *([1.0] * 7), exchange="X", conditions="I", ib_time=1)
    assert set(every.data(1)) == set(TickData.model_fields)


def test_the_schema_lists_every_info_status_and_complete_reason():
    """What the server sends, exactly (grep: Hub/IBSource events, Subscriber.complete), so a
    client author can handle each and the suite's check fails a misspelled one."""
    defs = side_schema("server")["$defs"]
    assert defs["InfoData"]["properties"]["status"]["enum"] == [
        "ib_disconnected",
        "resumed",
        "gap",
        "ib_advisory",
        "record_failed",
        "record_resumed",
        "replay_completed",
        "bus_disconnected",
        "bus_resumed",
    ]
    reasons = defs["CompleteData"]["properties"]["reason"]["enum"]
    assert reasons == ["limit_reached", "timeout", "error", "server_shutdown", "replay_completed"]
    assert defs["UnsubscribedOne"]["properties"]["reason"]["const"] == "unsubscribed"
    info = {"type": "info", "timestamp": TICK["timestamp"], "stream_id": "s"}
    assert (
        SchemaCheck().problem(orjson.dumps({**info, "data": {"status": "gap", "message": "m"}}))
        is None
    )
    assert SchemaCheck().problem(orjson.dumps({**info, "data": {"status": "gapp", "message": "m"}}))


def test_a_null_in_error_details_is_refused():
    error = message(
        "error",
        {
            "code": "INVALID_MESSAGE",
            "message": "m",
            "recoverable": True,
            "details": {"field": "data.x"},
        },
    )
    assert SchemaCheck().problem(error.payload) is None
    null = orjson.loads(error.payload)
    null["data"]["details"]["got"] = None
    assert "details.got" in SchemaCheck().problem(orjson.dumps(null))


@pytest.mark.parametrize("name", ["last", "LAST", " BidAsk ", "bid-ask", "ALL_LAST", "midpoint"])
def test_the_client_schema_takes_the_tick_type_spellings_the_server_takes(name):
    data = {"contract_id": AAPL, "tick_types": [name]}
    _client_validator()({"type": "subscribe", "data": data})
    assert parse_message(orjson.dumps({"type": "subscribe", "data": data})).subscribe


@pytest.mark.parametrize(
    "data",
    [
        {"contract_id": AAPL, "tick_types": ["bid ask"]},
        {"contract_id": AAPL, "tick_types": ["last,bid_ask"]},
        {"contract_id": "   ", "tick_types": ["last"]},
    ],
)
def test_the_client_schema_refuses_what_the_server_refuses(data):
    with pytest.raises(fastjsonschema.JsonSchemaException):
        _client_validator()({"type": "subscribe", "data": data})
    with pytest.raises(MessageError):
        parse_message(orjson.dumps({"type": "subscribe", "data": data}))


async def test_an_auth_refusal_reaches_the_sent_observer(make_server):
    """Every message is seen by the check, the guard's `error` AUTH_REQUIRED too; a test's
    own observer is chained after the suite's, not instead of it."""
    seen: list[bytes] = []
    server = await make_server(token="secret-of-this-test", sent_observer=seen.append)
    before = SENT.checked
    async with websockets.connect(server.ws_url, open_timeout=WAIT) as conn:
        msg = orjson.loads(await asyncio.wait_for(conn.recv(), WAIT))
    assert msg["type"] == "error" and msg["data"]["code"] == "AUTH_REQUIRED"
    assert [orjson.loads(p)["type"] for p in seen] == ["error"]
    assert SENT.checked == before + 1


@pytest.mark.parametrize(
    ("msg", "ok"),
    [
        ({"type": "ping", "id": "msg-003", "timestamp": "2025-01-15T10:30:00.123Z"}, True),
        ({"type": "stats", "timestamp": "2025-01-15T10:30:00.123Z", "metadata": {"a": 1}}, True),
        ({"type": "unsubscribe_all", "metadata": {"trace": [1, 2]}}, True),
        ({"type": "ping", "timestamp": 5}, False),
        ({"type": "ping", "sent_at": "x"}, False),
        ({"type": "ping", "id": 2**63 - 1}, True),
        ({"type": "ping", "id": 2**63}, False),
        ({"type": "subscribe", "data": {"contract_id": 2**31 - 1, "tick_types": ["last"]}}, True),
        (
            {"type": "subscribe", "data": {"contract_id": "2147483648", "tick_types": ["last"]}},
            False,
        ),
        ({"type": "subscribe", "data": {"contract_id": 2**31, "tick_types": ["last"]}}, False),
        (
            {
                "type": "subscribe",
                "data": {
                    "contract_id": 1,
                    "tick_types": ["last"],
                    "config": {"resume_from": 2**64},
                },
            },
            False,
        ),
        (
            {
                "type": "subscribe",
                "data": {
                    "contract_id": 1,
                    "tick_types": ["last"],
                    "config": {"resume_from": {"last": 2**63 - 1}, "limit": 2**63 - 1},
                },
            },
            True,
        ),
    ],
)
def test_the_schema_has_the_protocol_top_level_fields_and_integer_bounds(msg, ok):
    """`timestamp` and `metadata` on every client message (the original v2 protocol), and
    integers bounded where the server's are; the parser says the same."""
    try:
        _client_validator()(msg)
        schema_ok = True
    except fastjsonschema.JsonSchemaException:
        schema_ok = False
    try:
        parse_message(json.dumps(msg), CONTROL_TYPES if msg["type"] == "stats" else STREAM_TYPES)
        parser_ok = True
    except MessageError:
        parser_ok = False
    assert schema_ok == parser_ok == ok
