"""Pydantic models of the HTTP answers (health, errors), for the OpenAPI document.

The endpoints build their bodies as plain dicts (nulls omitted); these models say what
those bodies hold, so `/openapi.json` and `/docs` describe them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ibstream.protocol.messages import ErrorData


class UpstreamSubscription(BaseModel):
    contract_id: int
    tick_type: str


class IbStatus(BaseModel):
    model_config = ConfigDict(extra="allow")

    connected: bool
    host: str
    port: int
    client_id: int
    library: str
    server_version: int | None = Field(None, description="absent while not connected")
    ib_link_lost: bool = Field(description="TWS is up but lost IB's servers (1100)")
    reconnects: int
    last_error: str | None = Field(
        None, description="why IB is not connected; absent once it is connected again"
    )
    upstream_subscriptions: list[UpstreamSubscription]


class BackfillStatus(BaseModel):
    """`--backfill`: the store's gaps being filled from IB's history."""

    running: bool
    scans: int = Field(description="passes over the store's open gaps so far")
    gaps_pending: int = Field(description="open gaps of the last pass not settled yet")
    gaps: dict[str, int] = Field(
        description="gaps settled by this run: filled, partly_filled, unfillable"
    )
    ticks_added: int = Field(description="historical ticks stored by this run")


class BusStatus(BaseModel):
    """`--bus`: the NATS connection and what went onto the bus (`degraded` while it is down)."""

    model_config = ConfigDict(extra="allow")

    connected: bool
    url: str
    published: int | None = None
    buffered: int | None = None
    dropped: int | None = None


class RecordingStatus(BaseModel):
    """`--record`: where ticks are kept, and whether they can be written right now."""

    model_config = ConfigDict(extra="allow")

    store: str
    ok: bool
    problem: str | None = None
    flush_seconds: float
    ticks_written: int
    ticks_waiting: int
    ticks_dropped: int
    parts_written: int
    record_contracts: list[str] = []
    kept_streams: list[dict[str, Any]] = []
    backfill: BackfillStatus | None = None
    backfill_from: dict[str, Any] | None = Field(
        None,
        description="`--backfill-from`: `from` (HH:MM) and `problems` (streams it could not "
        "apply to: the time was not before their start)",
    )


class Health(BaseModel):
    """`GET /health`: 200 when IB is connected (and a recording can be written), 503 (same
    body) when degraded."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ok", "degraded"]
    ib: IbStatus
    version: str
    protocol_version: str
    connections: int
    upstream_streams: int
    recording: RecordingStatus | None = None
    bus: BusStatus | None = None


class ErrorResponse(BaseModel):
    """Every HTTP error: a JSON body with the error's code, message, details, recoverable."""

    error: ErrorData


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "INVALID_MESSAGE / INVALID_TICK_TYPE: `details.field` names the parameter"),
        (401, "AUTH_REQUIRED: the server wants its token"),
        (403, "PERMISSION_DENIED: page origin not allowed, or no market data permission"),
        (404, "CONTRACT_NOT_FOUND, or no such endpoint"),
        (429, "RATE_LIMIT_EXCEEDED: too many connections from this IP"),
        (503, "CONNECTION_ERROR: IB is not connected"),
    )
}
