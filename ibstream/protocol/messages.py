"""Pydantic models of every message the server sends, for the published JSON Schema.

The hot path encodes with orjson (`encode.py`); these models describe what it produces and
the test suite checks every payload it sends against them. Optional fields are absent when
they have no value (never null): `schema.py` publishes them that way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from ibstream.errors import ErrorCode
from ibstream.model import TickType

Timestamp = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$",
        description="ISO-8601 UTC with milliseconds",
    ),
]
RequestId = Annotated[int | str, Field(description="the `id` of the request this answers")]
Sequence = Annotated[int, Field(ge=0)]
Details = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": {"not": {"type": "null"}},
            "description": "facts a program can act on (field, expected, got, ib_code, ...); "
            "a key without a value is absent, never null",
        }
    ),
]
InfoStatus = Literal[
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
CompleteReason = Literal["limit_reached", "timeout", "error", "server_shutdown", "replay_completed"]


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    """Objects that may grow new fields without a protocol version change."""

    model_config = ConfigDict(extra="allow")


class Envelope(Closed):
    id: RequestId | None = Field(None, description="echo of the request's id (replies only)")
    stream_id: str | None = None
    timestamp: Timestamp


class Capabilities(Open):
    max_streams_per_connection: int
    supported_tick_types: list[TickType]
    ping_interval_seconds: float
    max_message_bytes: int
    resume: bool


class ConnectedData(Closed):
    version: str
    server_version: str
    server_id: str
    capabilities: Capabilities


class Contract(Open):
    contract_id: int
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    local_symbol: str | None = None
    min_tick: float | None = None
    description: str | None = None
    last_trade_date: str | None = None
    multiplier: str | None = None


class StreamInfo(Closed):
    stream_id: str
    tick_type: TickType
    start_sequence: Sequence


class SubscribedConfig(Closed):
    limit: int | None = None
    timeout_seconds: float | None = None
    resume_from: dict[TickType, Sequence] | None = None
    batch_ms: float | None = None
    format: Literal["arrow"] | None = Field(
        None, description="'arrow': this subscribe's ticks come as binary Arrow IPC frames"
    )
    start: str | None = Field(
        None, description="the `start` asked for (replay servers), ISO-8601 UTC, nanoseconds"
    )


class SubscribedData(Closed):
    contract: Contract
    streams: list[StreamInfo]
    config: SubscribedConfig | None = None
    server_id: str
    request_id: RequestId | None = None


class TickData(Closed):
    contract_id: int
    tick_type: TickType
    sequence: Annotated[int, Field(ge=1)]
    recv_ns: int
    price: float | None = None
    size: float | None = None
    bid_price: float | None = None
    bid_size: float | None = None
    ask_price: float | None = None
    ask_size: float | None = None
    mid_price: float | None = None
    exchange: str | None = None
    conditions: str | None = Field(
        None, description="IB's special conditions of a trade (odd lot, off-exchange ...)"
    )
    ib_time: Annotated[int, Field(ge=0)] | None = Field(
        None, description="IB's own tick time in epoch seconds (one-second resolution)"
    )


class TickItem(TickData):
    stream_id: str = Field(description="the stream this tick belongs to")
    timestamp: Timestamp = Field(description="this tick's own receive time")


class TicksData(Closed):
    ticks: list[TickItem] = Field(
        min_length=1,
        description="the ticks of the connection's batched streams in the order they arrived "
        "at the server; each stream's items are contiguous and in sequence order",
    )


class InfoData(Closed):
    status: InfoStatus = Field(
        description="ib_disconnected: IB (or its link to IB's servers) is gone, the stream "
        "resumes when it is back; resumed: it is back; gap: some ticks before the resume point "
        "cannot be replayed (`details.reason`: unknown_sequence, not_buffered, upstream_idle, "
        "ib_disconnected, replay_limit; from a replay server, the recording's own gaps with "
        "`details.recorded` true: server_restarted, record_failed ...); ib_advisory: an IB message that does not end the "
        "stream (`details.ib_code`); record_failed: the server records its streams (`--record`) "
        "and cannot write the store (disk full, directory gone): streaming goes on, the ticks "
        "wait in memory; record_resumed: the store is written again; replay_completed: a "
        "replay server sent the last recorded tick of this stream (`complete` follows); "
        "bus_disconnected / bus_resumed: an edge server (`--from-bus`) lost / regained the "
        "NATS bus its ticks come from (it catches up from the bus: nothing is lost)"
    )
    message: str
    details: Details | None = None
    request_id: RequestId | None = None


class ErrorData(Closed):
    code: ErrorCode
    message: str
    details: Details
    recoverable: bool
    request_id: RequestId | None = None


class CompleteData(Closed):
    reason: CompleteReason = Field(
        description="limit_reached: `limit` ticks sent; timeout: `timeout_seconds` passed; "
        "error: an `error` on this stream came first; server_shutdown: the server is stopping; "
        "replay_completed: a replay server sent this stream's last recorded tick"
    )
    total_ticks: int
    duration_seconds: float
    final_sequence: Sequence


class UnsubscribedOne(CompleteData):
    reason: Literal["unsubscribed"]  # type: ignore[assignment]
    stream_id: str
    request_id: RequestId | None = None


class UnsubscribedAll(Closed):
    stream_ids: list[str]
    request_id: RequestId | None = None


class PongData(Closed):
    client_timestamp: Any = Field(
        None,
        description="the ping's data.timestamp, else its top-level timestamp, as sent (a value "
        "JSON cannot hold as text, long strings clipped)",
    )
    server_timestamp: Timestamp
    request_id: RequestId | None = None


class Stats(Open):
    """`GET /ws/stats` and the control channel's `stats` reply."""

    version: str
    uptime_seconds: float
    connections: int
    per_ip: dict[str, int]
    subscribers: list[dict[str, Any]]
    hub: dict[str, Any]
    request_id: RequestId | None = None


class HistoryTick(TickData):
    sequence: Annotated[int, Field(ge=0)] = Field(  # type: ignore[assignment]
        description="the recording's sequence; 0 for ticks fetched from IB"
    )
    source: Literal["live", "historical", "ib"] = Field(
        description="live: stored from the live stream; historical: stored by backfill; "
        "ib: fetched from IB for this request (receive time synthesized inside its hole)"
    )


class HistoryPiece(Closed):
    tick_type: TickType
    start_ns: int
    end_ns: int
    source: Literal["store", "ib"]


class HistoryStartedData(Closed):
    contract: Contract
    tick_types: list[TickType]
    start_ns: int
    end_ns: int = Field(description="the range's end (a later end than now is now)")
    plan: list[HistoryPiece]
    request_id: RequestId | None = None


class HistoryTicksData(Closed):
    ticks: list[HistoryTick] = Field(
        description="at most 5,000 ticks, oldest first across tick types"
    )
    request_id: RequestId | None = None


class HistoryProgressData(Closed):
    done_seconds: float
    total_seconds: float
    ticks: int
    requests: int = Field(description="requests made to IB so far")
    request_id: RequestId | None = None


class HistoryMissing(Closed):
    tick_type: TickType
    start_ns: int
    end_ns: int
    code: ErrorCode
    message: str
    ib_code: int | None = None
    ib_message: str | None = None


class HistoryCompleteData(Closed):
    ticks: int
    from_store: int
    from_ib: int
    requests: int
    missing: list[HistoryMissing] = Field(
        description="what could not be had (IB refused, no data, connection lost): a partial "
        "answer says so here"
    )
    cancelled: bool | None = Field(None, description="true: ended by `history_cancel`")
    request_id: RequestId | None = None


class HistoryStarted(Envelope):
    type: Literal["history_started"]
    data: HistoryStartedData


class HistoryTicks(Envelope):
    type: Literal["history_ticks"]
    data: HistoryTicksData


class HistoryProgress(Envelope):
    type: Literal["history_progress"]
    data: HistoryProgressData


class HistoryComplete(Envelope):
    type: Literal["history_complete"]
    data: HistoryCompleteData


class Connected(Envelope):
    type: Literal["connected"]
    data: ConnectedData


class Subscribed(Envelope):
    type: Literal["subscribed"]
    data: SubscribedData


class TickMessage(Envelope):
    type: Literal["tick"]
    stream_id: str
    data: TickData


class TicksMessage(Envelope):
    """One frame per connection and interval: every item names its stream (no top-level
    `stream_id`)."""

    type: Literal["ticks"]
    timestamp: Timestamp = Field(description="when the frame was made")
    data: TicksData


class Info(Envelope):
    type: Literal["info"]
    data: InfoData


class Error(Envelope):
    type: Literal["error"]
    data: ErrorData


class Complete(Envelope):
    type: Literal["complete"]
    stream_id: str
    data: CompleteData


class Unsubscribed(Envelope):
    type: Literal["unsubscribed"]
    data: UnsubscribedOne | UnsubscribedAll


class Pong(Envelope):
    type: Literal["pong"]
    data: PongData


class StatsMessage(Envelope):
    type: Literal["stats"]
    data: Stats


SERVER_MESSAGES = (
    Connected,
    Subscribed,
    TickMessage,
    TicksMessage,
    Info,
    Error,
    Complete,
    Unsubscribed,
    Pong,
    StatsMessage,
    HistoryStarted,
    HistoryTicks,
    HistoryProgress,
    HistoryComplete,
)
ServerMessage = Annotated[
    Connected
    | Subscribed
    | TickMessage
    | TicksMessage
    | Info
    | Error
    | Complete
    | Unsubscribed
    | Pong
    | StatsMessage
    | HistoryStarted
    | HistoryTicks
    | HistoryProgress
    | HistoryComplete,
    Field(discriminator="type"),
]
