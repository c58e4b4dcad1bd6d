"""Status endpoints: `GET /health`, `GET /ws/stats`, `GET /v2/contracts`.

None of these count against the per-IP stream connection limit, so a client that used up
its slots can still see why. Bodies omit nulls, as every answer of the protocol does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import JSONResponse

from ibstream.errors import ErrorCode, StreamError
from ibstream.protocol.encode import PROTOCOL_VERSION
from ibstream.protocol.http import ERROR_RESPONSES, Health
from ibstream.protocol.messages import Contract, Stats
from ibstream.server.sse import VERSION_HEADER, error_response

if TYPE_CHECKING:
    from ibstream.server.app import ServerContext

T = TypeVar("T")
SYMBOL = {
    "name": "symbol",
    "in": "query",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
    "description": "a symbol such as AAPL, EUR.USD, ES",
}


def without_nulls(value: T) -> T:
    """`value` with every None-valued key dropped, at any depth."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}  # type: ignore[return-value]
    if isinstance(value, list):
        return [without_nulls(v) for v in value]  # type: ignore[return-value]
    return value


def health_body(ctx: ServerContext) -> dict:
    """IB's state as it is now: a `last_error` is only shown while IB is not connected."""
    ib = ctx.hub.source.status()
    ok = bool(ib.get("connected")) and not ib.get("ib_link_lost")
    recording = ctx.recording.status() if ctx.recording is not None else None
    if recording is not None and not recording["ok"]:
        ok = False  # live streaming goes on, but what it streams is not being kept
    if ib.get("connected"):
        ib.pop("last_error", None)  # it described an outage that is over
    bus = ctx.bus.status() if ctx.bus is not None else None
    if bus is not None and not bus["connected"]:
        ok = False  # clients are served, but nothing reaches the bus's consumers
    return without_nulls(
        {
            "status": "ok" if ok else "degraded",
            "ib": ib,
            "version": ctx.version,
            "protocol_version": PROTOCOL_VERSION,
            "connections": ctx.connections.limiter.total,
            "upstream_streams": len(ctx.hub.channels),
            "recording": recording,
            "bus": bus,
        }
    )


def routes(ctx: ServerContext) -> list[APIRoute]:
    async def health() -> JSONResponse:
        body = health_body(ctx)
        return JSONResponse(body, 200 if body["status"] == "ok" else 503, headers=VERSION_HEADER)

    async def stats() -> JSONResponse:
        return JSONResponse(ctx.stats(), headers=VERSION_HEADER)

    async def contracts(request: Request) -> JSONResponse:
        symbol = request.query_params.get("symbol", "").strip()
        if not symbol:
            return error_response(
                StreamError(
                    ErrorCode.INVALID_MESSAGE,
                    "query parameter 'symbol' is required, e.g. /v2/contracts?symbol=AAPL",
                    details={"field": "symbol", "expected": "a symbol such as AAPL"},
                )
            )
        try:
            found = await ctx.hub.source.search(symbol)
        except StreamError as exc:
            return error_response(exc)
        if not found:
            return error_response(
                StreamError(
                    ErrorCode.CONTRACT_NOT_FOUND,
                    f"no contract matches {symbol!r}",
                    details={"symbol": symbol},
                )
            )
        return JSONResponse([c.to_dict() for c in found], headers=VERSION_HEADER)

    degraded = {503: {"model": Health, "description": "degraded: IB is not connected"}}
    return [
        APIRoute(
            "/health",
            health,
            methods=["GET"],
            response_model=Health,
            responses=degraded,
            summary="Server and IB connection state",
            tags=["status"],
        ),
        APIRoute(
            "/ws/stats",
            stats,
            methods=["GET"],
            response_model=Stats,
            summary="Connections, subscribers, queues and upstream streams",
            tags=["status"],
        ),
        APIRoute(
            "/v2/contracts",
            contracts,
            methods=["GET"],
            response_model=list[Contract],
            responses={
                400: ERROR_RESPONSES[400],
                404: ERROR_RESPONSES[404],
                503: ERROR_RESPONSES[503],
            },
            summary="Contracts IB knows for a symbol",
            openapi_extra={"parameters": [SYMBOL]},
            tags=["status"],
        ),
    ]
