"""The control channel `/ws/control`: `stats` and `ping` requests, answered inline.

It counts against the per-IP connection limit like the stream connections (an unlimited
number of them would be a way around it); `GET /health` and `GET /ws/stats` stay uncounted,
so a client that used up its slots can still see why. Each reply gets the server's
`send_timeout`: a client that stops reading is disconnected, not waited on forever.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ibstream.errors import CloseCode, ErrorCode, StreamError
from ibstream.protocol.encode import Outgoing, error_message, message
from ibstream.protocol.validate import CONTROL_TYPES, MessageError, parse_message
from ibstream.server.ws import payload_size, pong, raw_text, too_big

if TYPE_CHECKING:
    from ibstream.server.app import ServerContext

log = logging.getLogger(__name__)


def routes(ctx: ServerContext) -> list[BaseRoute]:
    async def control(websocket: WebSocket) -> None:
        await ControlSession(websocket, ctx).run()

    return [WebSocketRoute("/ws/control", control)]


class ControlSession:
    """Request/response only, so replies are sent inline: nothing else writes here."""

    def __init__(self, websocket: WebSocket, ctx: ServerContext):
        self.ws = websocket
        self.ctx = ctx
        self.ip = websocket.client.host if websocket.client else "unknown"
        self.timeout = ctx.settings.send_timeout

    async def run(self) -> None:
        await self.ws.accept()
        connections = self.ctx.connections
        try:
            connections.open_control(self.ip)
        except StreamError as exc:
            limited = exc.code == ErrorCode.RATE_LIMIT_EXCEEDED
            code = CloseCode.POLICY if limited else CloseCode.GOING_AWAY
            await self._close(error_message(exc), code)
            return
        try:
            await self._serve()
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass
        except TimeoutError:
            log.warning(
                "control %s: a reply blocked for %.1fs, disconnected", self.ip, self.timeout
            )
        finally:
            connections.close_control(self.ip)

    async def _serve(self) -> None:
        limit = self.ctx.settings.max_message_bytes
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            raw = raw_text(msg)
            size = payload_size(raw)
            if size > limit:
                await self._close(error_message(too_big(size, limit)), CloseCode.MESSAGE_TOO_BIG)
                return
            await self._reply(self._answer(raw))

    def _answer(self, raw: str | bytes) -> Outgoing:
        try:
            req = parse_message(raw, CONTROL_TYPES)
        except MessageError as exc:
            return error_message(exc, request_id=exc.request_id)
        if req.type == "stats":
            return message("stats", self.ctx.stats(), request_id=req.request_id)
        return pong(req)

    async def _reply(self, out: Outgoing) -> None:
        """Send within send_timeout (TimeoutError past it)."""
        async with asyncio.timeout(self.timeout):
            await self.ws.send_text(out.payload.decode())
        observer = self.ctx.settings.sent_observer
        if observer is not None:
            observer(out.payload)

    async def _close(self, out: Outgoing, code: int) -> None:
        """Tell the client why, and close; bounded by send_timeout."""
        try:
            await self._reply(out)
            async with asyncio.timeout(self.timeout):
                await self.ws.close(code)
        except (WebSocketDisconnect, OSError, RuntimeError, TimeoutError):
            pass
