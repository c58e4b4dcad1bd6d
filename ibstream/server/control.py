"""Control and status endpoints: `/ws/control`, `GET /ws/stats`, `GET /health`, `GET /v2/contracts`.

None of these count against the per-IP stream connection limit, so a client that used up
its slots can still see why.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ibstream.errors import CloseCode, ErrorCode, StreamError
from ibstream.model import iso_timestamp
from ibstream.protocol.encode import PROTOCOL_VERSION, error_message, message
from ibstream.protocol.validate import CONTROL_TYPES, MessageError, parse_message
from ibstream.server.sse import VERSION_HEADER, error_response
from ibstream.server.ws import payload_size, raw_text, too_big

if TYPE_CHECKING:
    from ibstream.server.app import ServerContext

log = logging.getLogger(__name__)


def routes(ctx: ServerContext) -> list[BaseRoute]:
    async def stats(_request: Request) -> JSONResponse:
        return JSONResponse(ctx.stats(), headers=VERSION_HEADER)

    async def health(_request: Request) -> JSONResponse:
        ib = ctx.hub.source.status()
        body = {
            "status": "ok" if ib.get("connected") else "degraded",
            "ib": ib,
            "version": ctx.version,
            "protocol_version": PROTOCOL_VERSION,
            "connections": ctx.connections.limiter.total,
            "upstream_streams": len(ctx.hub.channels),
        }
        return JSONResponse(body, headers=VERSION_HEADER)

    async def contracts(request: Request) -> JSONResponse:
        symbol = request.query_params.get("symbol", "").strip()
        if not symbol:
            return error_response(
                StreamError(
                    ErrorCode.INVALID_MESSAGE,
                    "query parameter 'symbol' is required, e.g. /v2/contracts?symbol=AAPL",
                    details={"field": "symbol"},
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

    async def control(websocket: WebSocket) -> None:
        await control_session(websocket, ctx)

    return [
        Route("/ws/stats", stats, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/v2/contracts", contracts, methods=["GET"]),
        WebSocketRoute("/ws/control", control),
    ]


async def control_session(websocket: WebSocket, ctx: ServerContext) -> None:
    """Request/response only, so replies are sent inline: nothing else writes here."""
    await websocket.accept()
    limit = ctx.settings.max_message_bytes
    try:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                return
            raw = raw_text(msg)
            size = payload_size(raw)
            if size > limit:
                await websocket.send_text(error_message(too_big(size, limit)).payload.decode())
                await websocket.close(CloseCode.MESSAGE_TOO_BIG)
                return
            try:
                req = parse_message(raw, CONTROL_TYPES)
            except MessageError as exc:
                reply = error_message(exc, request_id=exc.request_id)
            else:
                if req.type == "stats":
                    reply = message("stats", ctx.stats(), request_id=req.request_id)
                else:
                    pong = {
                        "client_timestamp": req.data.get("timestamp"),
                        "server_timestamp": iso_timestamp(),
                    }
                    reply = message("pong", pong, request_id=req.request_id)
            await websocket.send_text(reply.payload.decode())
    except (WebSocketDisconnect, OSError, RuntimeError):
        return
