"""Pydantic models of everything a client sends: WebSocket requests and SSE query parameters.

These models are the validation (`validate.py` runs them and turns their errors into
INVALID_MESSAGE) and the published JSON Schema (`schema.py`), so the two cannot drift.
Unknown fields are rejected rather than ignored: a typo must not silently drop an option
such as `limit` (an unknown top-level field is a recoverable error: the request is not run,
the connection stays open). Every integer has bounds JSON and the server can hold (64-bit
sequences and ids, IB's 32-bit conIds). `EXPECTED` says, per field, what a person must send;
errors quote it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    TypeAdapter,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from ibstream.errors import StreamError
from ibstream.model import TickType
from ibstream.protocol.encode import clip
from ibstream.protocol.times import epoch_ns, parse_time_ns

MAX_ID_LEN = 128
MAX_SPEC_LEN = 64
MAX_BATCH_MS = 1000
MAX_TIMESTAMP_LEN = 64
INT64_MAX = 2**63 - 1
MAX_CONID = 2**31 - 1  # IB's conId is a 32-bit int
MAX_TIMEOUT_SECONDS = 366 * 86_400
IB_TICK_NAMES = ("Last", "AllLast", "BidAsk", "MidPoint")

EXPECTED = {
    "type": "one of {types}",
    "id": f"a string (up to {MAX_ID_LEN} chars) or a 64-bit integer",
    "timestamp": f"an ISO-8601 time as a string (up to {MAX_TIMESTAMP_LEN} chars)",
    "metadata": "an object",
    "data": "an object",
    "data.contract_id": f"a conId (265598, 1 to {MAX_CONID}) or a symbol such as 'AAPL'",
    "data.tick_types": "a list such as ['bid_ask', 'last']",
    "data.config": "an object",
    "data.config.limit": f"a positive integer (up to {INT64_MAX})",
    "data.config.timeout_seconds": f"a positive number of seconds (up to {MAX_TIMEOUT_SECONDS})",
    "data.config.resume_from": f"a sequence number (integer 0 to {INT64_MAX}), or "
    "{tick_type: sequence}",
    "data.config.batch_ms": f"a number of milliseconds, 0 (off) to {MAX_BATCH_MS}",
    "data.config.format": "'json' (the default) or 'arrow' (binary frames, with batch_ms; "
    "replay servers only)",
    "data.config.start": "an ISO-8601 time such as 2026-12-07T14:30:00Z, or epoch nanoseconds "
    "(replay servers only)",
    "data.contract": f"a conId (265598, 1 to {MAX_CONID}) or a symbol such as 'AAPL'",
    "data.start": "an ISO-8601 time such as 2026-12-07T14:30:00Z, epoch seconds or epoch ns",
    "data.end": "an ISO-8601 time such as 2026-12-07T14:30:00Z, epoch seconds or epoch ns",
    "end": "an ISO-8601 time such as 2026-12-07T14:30:00Z, epoch seconds or epoch ns",
    "data.stream_id": f"the stream_id string from 'subscribed' (up to {MAX_ID_LEN} chars)",
    "data.timestamp": "any JSON value (echoed back)",
    "contract_id": f"a conId (265598, 1 to {MAX_CONID}) or a symbol such as 'AAPL'",
    "limit": f"a positive integer (up to {INT64_MAX})",
    "timeout": f"a positive number of seconds (up to {MAX_TIMEOUT_SECONDS})",
    "batch_ms": f"a number of milliseconds, 0 (off) to {MAX_BATCH_MS}",
    "tick_types": "a list such as ?tick_types=bid_ask,last",
    "resume_from": f"a sequence number (50, up to {INT64_MAX}) or per tick type "
    "(bid_ask:50,last:3)",
    "tick_type": "a tick type such as bid_ask or last",
    "Last-Event-ID": f"a sequence number (50, up to {INT64_MAX}) or per tick type "
    "(bid_ask:50,last:3)",
    "token": "the server's token",
    "format": "json (SSE is text: Arrow frames are on the WebSocket endpoint only)",
    "start": "an ISO-8601 time such as 2026-12-07T14:30:00Z, or epoch nanoseconds "
    "(replay servers only)",
}


def _any_case(word: str) -> str:
    """A regex matching `word` in any letter case (JSON Schema patterns have no flags)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


# What TickType.parse accepts, as a pattern: blanks around, any case, `_`, `-` or nothing
# between the words (last, bid_ask, BidAsk, BID-ASK, alllast, ...).
TICK_TYPE_PATTERN = (
    r"^\s*("
    + "|".join("[_-]?".join(_any_case(word) for word in t.value.split("_")) for t in TickType)
    + r")\s*$"
)


def contract_value(value: object) -> str | int:
    """A conId (int or ASCII digits, 1 to MAX_CONID) or a symbol spec such as 'AAPL'."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_CONID:
        return value
    if isinstance(value, str) and len(value) <= MAX_SPEC_LEN:
        text = value.strip()
        if not (text.isascii() and text.isdigit()):
            if text:
                return text
        elif 0 < int(text) <= MAX_CONID:
            return int(text)
    raise PydanticCustomError("contract", "not a conId or symbol")


def request_id_value(value: object) -> str | int:
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and -INT64_MAX - 1 <= value <= INT64_MAX
    ):
        return value
    if isinstance(value, str) and len(value) <= MAX_ID_LEN:
        return value
    raise PydanticCustomError("request_id", "not a request id")


def at_most_pattern(limit: int) -> str:
    """A regex matching the decimal numbers 1..limit written without leading zeros (so a
    JSON Schema `pattern` can bound a number sent as digits)."""
    digits = str(limit)
    shorter = [f"[1-9][0-9]{{0,{len(digits) - 2}}}"] if len(digits) > 1 else []
    same = [
        f"{digits[:i]}[{1 if i == 0 else 0}-{int(d) - 1}][0-9]{{{len(digits) - i - 1}}}"
        for i, d in enumerate(digits)
        if int(d) > (1 if i == 0 else 0)
    ]
    return "(?:" + "|".join([*shorter, *same, digits]) + ")"


# A symbol (not all digits), or a conId as digits within range; blanks around either.
SPEC_PATTERN = rf"^\s*(?:0*{at_most_pattern(MAX_CONID)}\s*$|(?![0-9]+\s*$)\S)"


def tick_type_value(value: object) -> TickType:
    """The wire name (`bid_ask`) or IB's (`BidAsk`); anything else is INVALID_TICK_TYPE."""
    if not isinstance(value, str):
        value = repr(value)
    try:
        return TickType.parse(value)
    except StreamError:
        shown = clip(value, MAX_SPEC_LEN)
        supported = ", ".join(t.value for t in TickType)
        raise PydanticCustomError(
            "tick_type", f"unknown tick type {shown!r}; use one of {supported}"
        ) from None


ContractSpec = Annotated[
    int | str,
    PlainValidator(contract_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_CONID},
                {"type": "string", "maxLength": MAX_SPEC_LEN, "pattern": SPEC_PATTERN},
            ],
            "description": "IB conId (as a number or digits), or a symbol such as 'AAPL', "
            "'EUR.USD', 'ES'",
        }
    ),
]
TickTypeName = Annotated[
    TickType,
    PlainValidator(tick_type_value),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": TICK_TYPE_PATTERN,
            "examples": [t.value for t in TickType] + list(IB_TICK_NAMES),
            "description": "wire name (bid_ask) or IB's (BidAsk), in any case; the words "
            "joined by `_`, `-` or nothing",
        }
    ),
]


def start_value(value: object) -> int:
    """A replay's start: ISO-8601 text (at most MAX_TIMESTAMP_LEN chars) or epoch ns."""
    if isinstance(value, str) and len(value) > MAX_TIMESTAMP_LEN:
        raise PydanticCustomError("start", "too long for a time")
    if isinstance(value, int) and not isinstance(value, bool) and value > INT64_MAX:
        raise PydanticCustomError("start", "beyond 64 bits")
    try:
        return parse_time_ns(value)
    except ValueError as exc:
        raise PydanticCustomError("start", str(exc)) from None


ReplayStart = Annotated[
    int,
    PlainValidator(start_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": INT64_MAX},
                {"type": "string", "maxLength": MAX_TIMESTAMP_LEN},
            ],
            "description": "replay servers only (`ibstream replay`): replay the recording from "
            "this time, ISO-8601 (UTC unless an offset is given, up to nine fractional digits) "
            "or epoch nanoseconds; a live server refuses it",
        }
    ),
]


def history_time_value(value: object) -> int:
    """A history request's `start` / `end`: ISO-8601 (naive: UTC), or epoch seconds (an
    int or decimal below 10^11, fractions allowed) or epoch nanoseconds (an int of 10^15 or
    more), as a number or its text."""
    if isinstance(value, str) and len(value) > MAX_TIMESTAMP_LEN:
        raise PydanticCustomError("time", "too long for a time")
    if isinstance(value, bool):
        raise PydanticCustomError("time", "a time, not a boolean")
    number: float | int | None = value if isinstance(value, int | float) else None
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text) if text.isdigit() else float(text) if text else None
        except ValueError:
            number = None
    if number is not None:
        try:
            return epoch_ns(number)
        except ValueError as exc:
            raise PydanticCustomError("time", str(exc)) from None
    try:
        return parse_time_ns(value)
    except ValueError as exc:
        raise PydanticCustomError("time", str(exc)) from None


HistoryTime = Annotated[
    int,
    PlainValidator(history_time_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "maxLength": MAX_TIMESTAMP_LEN},
            ],
            "description": "ISO-8601 (UTC unless an offset is given), epoch seconds (below "
            "10^11, fractions allowed) or epoch nanoseconds",
        }
    ),
]
RequestId = Annotated[
    int | str,
    PlainValidator(request_id_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": -INT64_MAX - 1, "maximum": INT64_MAX},
                {"type": "string", "maxLength": MAX_ID_LEN},
            ]
        }
    ),
]
Sequence = Annotated[int, Field(ge=0, le=INT64_MAX)]
Count = Annotated[int, Field(gt=0, le=INT64_MAX)]
Milliseconds = Annotated[float, Field(ge=0, le=MAX_BATCH_MS, allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, le=MAX_TIMEOUT_SECONDS, allow_inf_nan=False)]
ClientTimestamp = Annotated[str, Field(max_length=MAX_TIMESTAMP_LEN)]


def _resume_kind(value: Any) -> str:
    return "per_type" if isinstance(value, dict) else "sequence"


ResumeFrom = Annotated[
    Annotated[Sequence, Tag("sequence")] | Annotated[dict[str, Sequence], Tag("per_type")],
    Discriminator(_resume_kind),
]
RESUME_TAGS = frozenset({"sequence", "per_type"})  # union branch names: not part of a path


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SubscribeConfig(Strict):
    limit: Count | None = Field(None, description="end each stream after this many ticks")
    timeout_seconds: Seconds | None = Field(None, description="end each stream after this long")
    resume_from: ResumeFrom | None = Field(
        None,
        description="continue after these sequences: one number (one tick type) or "
        "{tick_type: sequence}",
    )
    batch_ms: Milliseconds | None = Field(
        None,
        description="send the ticks of each interval of this many ms as one `ticks` message "
        "(absent or 0: one `tick` message per tick)",
    )
    format: Literal["json", "arrow"] | None = Field(
        None,
        description="how batched ticks travel: 'json' (absent: `ticks` messages) or 'arrow': "
        "binary WebSocket messages, each an Arrow IPC stream of one record batch (columns: "
        "the tick `data` fields plus stream_id); needs batch_ms; replay servers only (a live "
        "server refuses it with INVALID_MESSAGE); every other message stays JSON",
    )
    start: ReplayStart | None = None


class SubscribeData(Strict):
    contract_id: ContractSpec
    tick_types: Annotated[list[TickTypeName], Field(min_length=1)]
    config: SubscribeConfig | None = None


class HistoryData(Strict):
    contract: ContractSpec
    tick_types: Annotated[list[TickTypeName], Field(min_length=1)] | None = Field(
        None, description="the tick types to answer (absent: bid_ask and last)"
    )
    start: HistoryTime = Field(description="the first moment of the range")
    end: HistoryTime | None = Field(
        None, description="the range ends before it (absent or later than now: now)"
    )


class UnsubscribeData(Strict):
    stream_id: Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN)]


class PingData(Strict):
    timestamp: Any = Field(None, description="echoed back as `client_timestamp`")


class Empty(Strict):
    pass


class Request(Strict):
    id: RequestId | None = Field(None, description="echoed in the reply, as sent")
    timestamp: ClientTimestamp | None = Field(
        None,
        description="when the client sent it, ISO-8601 (e.g. 2025-01-15T10:30:00.123Z); not "
        "checked, a ping's pong echoes it as `client_timestamp`",
    )
    metadata: dict[str, Any] | None = Field(
        None, description="anything the client wants to attach; the server ignores it"
    )


class SubscribeRequest(Request):
    type: Literal["subscribe"]
    data: SubscribeData


class UnsubscribeRequest(Request):
    type: Literal["unsubscribe"]
    data: UnsubscribeData


class UnsubscribeAllRequest(Request):
    type: Literal["unsubscribe_all"]
    data: Empty | None = None


class PingRequest(Request):
    type: Literal["ping"]
    data: PingData | None = None


class HistoryRequest(Request):
    type: Literal["history"]
    data: HistoryData


class HistoryCancelRequest(Request):
    type: Literal["history_cancel"]
    data: Empty | None = None


class StatsRequest(Request):
    type: Literal["stats"]
    data: Empty | None = None


STREAM_REQUESTS = (
    SubscribeRequest,
    UnsubscribeRequest,
    UnsubscribeAllRequest,
    PingRequest,
    HistoryRequest,
    HistoryCancelRequest,
)
CONTROL_REQUESTS = (StatsRequest, PingRequest)
StreamRequest = Annotated[
    SubscribeRequest
    | UnsubscribeRequest
    | UnsubscribeAllRequest
    | PingRequest
    | HistoryRequest
    | HistoryCancelRequest,
    Field(discriminator="type"),
]
ControlRequest = Annotated[StatsRequest | PingRequest, Field(discriminator="type")]
STREAM_ADAPTER: TypeAdapter = TypeAdapter(StreamRequest)
CONTROL_ADAPTER: TypeAdapter = TypeAdapter(ControlRequest)


class SseQuery(BaseModel):
    """Query parameters of the SSE endpoints (strings on the wire, so not strict)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: Count | None = Field(None, description="end each stream after this many ticks")
    timeout: Seconds | None = Field(None, description="end the response after this many seconds")
    tick_types: str | None = Field(
        None,
        description="comma-separated tick types (multi-type endpoint only), e.g. bid_ask,last",
    )
    resume_from: str | None = Field(
        None,
        description="continue after a sequence (`50`) or per tick type (`bid_ask:50,last:3`); "
        "the Last-Event-ID header does the same",
    )
    batch_ms: Milliseconds | None = Field(
        None, description="one `ticks` event per interval of this many ms (0: one per tick)"
    )
    token: str | None = Field(
        None, description="the server's token (EventSource cannot send headers)"
    )
    format: Literal["json", "arrow"] | None = Field(
        None,
        description="json only: SSE is text, so `arrow` is refused (INVALID_MESSAGE); binary "
        "frames are on the WebSocket endpoint",
    )
    start: ReplayStart | None = None


class HistoryQuery(BaseModel):
    """Query parameters of `GET /v2/history/{contract}` (strings on the wire, so not strict)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # what its fields must be, where the SSE query's fields of the same names differ
    EXPECTED: ClassVar[dict[str, str]] = {
        "start": "a time such as 2026-12-07T14:30:00Z, epoch seconds or ns",
        "format": "one of jsonl, sse, arrow",
        "compression": "one of none, lz4, zstd",
    }

    tick_types: str | None = Field(
        None, description="comma-separated tick types, e.g. bid_ask,last (the default)"
    )
    start: HistoryTime = Field(description="the first moment of the range")
    end: HistoryTime | None = Field(
        None, description="the range ends before it (absent or later than now: now)"
    )
    format: Literal["jsonl", "sse", "arrow"] | None = Field(
        None,
        description="jsonl (the default: one JSON message a line), sse (also chosen by "
        "`Accept: text/event-stream`) or arrow (one Arrow IPC stream)",
    )
    compression: Literal["none", "lz4", "zstd"] | None = Field(
        None,
        description="arrow only: the IPC stream's buffers compressed with lz4 (about a fifth "
        "of the bytes of ticks, for a client across a network; what `ibstream` asks for) or "
        "zstd; none (the default) for readers without IPC compression, such as Arrow JS",
    )
    token: str | None = Field(None, description="the server's token")
