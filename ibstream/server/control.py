"""The control channel `/ws/control`: `stats` and `ping` requests, answered inline.

It does not count against the per-IP stream connection limit, so a client that used up its
slots can still see why (as the HTTP status endpoints of `status.py`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ibstream.errors import CloseCode
from ibstream.model import iso_timestamp
from ibstream.protocol.encode import Outgoing, error_message, message
from ibstream.protocol.validate import CONTROL_TYPES, MessageError, parse_message
from ibstream.server.ws import payload_size, raw_text, too_big

if TYPE_CHECKING:
    from ibstream.server.app import ServerContext

log = logging.getLogger(__name__)


def routes(ctx: ServerContext) -> list[BaseRoute]:
    async def control(websocket: WebSocket) -> None:
        await control_session(websocket, ctx)

    return [WebSocketRoute("/ws/control", control)]


async def control_session(websocket: WebSocket, ctx: ServerContext) -> None:
    """Request/response only, so replies are sent inline: nothing else writes here."""
    await websocket.accept()
    limit = ctx.settings.max_message_bytes
    observer = ctx.settings.sent_observer

    async def reply(out: Outgoing) -> None:
        await websocket.send_text(out.payload.decode())
        if observer is not None:
            observer(out.payload)

    try:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                return
            raw = raw_text(msg)
            size = payload_size(raw)
            if size > limit:
                await reply(error_message(too_big(size, limit)))
                await websocket.close(CloseCode.MESSAGE_TOO_BIG)
                return
            try:
                req = parse_message(raw, CONTROL_TYPES)
            except MessageError as exc:
                await reply(error_message(exc, request_id=exc.request_id))
                continue
            if req.type == "stats":
                await reply(message("stats", ctx.stats(), request_id=req.request_id))
            else:
                pong = {
                    "client_timestamp": req.data.get("timestamp"),
                    "server_timestamp": iso_timestamp(),
                }
                await reply(message("pong", pong, request_id=req.request_id))
    except (WebSocketDisconnect, OSError, RuntimeError):
        return
