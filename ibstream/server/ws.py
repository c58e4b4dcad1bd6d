"""WebSocket endpoint `/v2/ws/stream`: many streams per connection, controlled by messages.

Each connection runs two tasks. The reader validates client messages and answers through
the connection's `Subscriber` queue; the writer is the only task that sends. The hub never
waits on either, so a client that stops reading only fills its own bounded queue and is then
closed (1008, SLOW_CONSUMER), while everyone else keeps streaming.

Bad input never ends the connection except for an oversized message (INVALID_MESSAGE, then
close 1009). An unknown contract is an `error` reply (CONTRACT_NOT_FOUND): close code 4002 is
not used, so one bad subscribe cannot tear down the other streams of the connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ibstream.errors import CloseCode, ErrorCode, StreamError
from ibstream.model import TickType, iso_timestamp
from ibstream.protocol.encode import PROTOCOL_VERSION, error_message, message
from ibstream.protocol.validate import ClientMessage, MessageError, parse_message
from ibstream.server.subscriber import Subscriber, SubscriberClosed, subscribed_message

if TYPE_CHECKING:
    from ibstream.server.app import ServerContext
    from ibstream.server.connections import Connection

log = logging.getLogger(__name__)
_SEND_FAILED = (WebSocketDisconnect, OSError, RuntimeError)


def routes(ctx: ServerContext) -> list[BaseRoute]:
    async def endpoint(websocket: WebSocket) -> None:
        await StreamSession(websocket, ctx).run()

    return [WebSocketRoute("/v2/ws/stream", endpoint)]


def too_big(size: int, limit: int) -> StreamError:
    return StreamError(
        ErrorCode.INVALID_MESSAGE,
        f"message of {size} bytes exceeds the limit of {limit} bytes; the connection closes (1009)",
        details={"size": size, "max_message_bytes": limit},
    )


def raw_text(msg: dict) -> str | bytes:
    text = msg.get("text")
    return text if text is not None else (msg.get("bytes") or b"")


def payload_size(raw: str | bytes) -> int:
    return len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))


class StreamSession:
    """One `/v2/ws/stream` connection."""

    def __init__(self, websocket: WebSocket, ctx: ServerContext):
        self.ws = websocket
        self.ctx = ctx
        self.settings = ctx.settings
        client = websocket.client
        self.ip = client.host if client else "unknown"
        self.sub = Subscriber(
            ctx.hub,
            client=f"ws {self.ip}:{client.port if client else 0}",
            max_streams=self.settings.max_streams_per_connection,
            queue_size=self.settings.queue_size,
        )
        self.conn: Connection | None = None

    async def run(self) -> None:
        await self.ws.accept()
        try:
            self.conn = self.ctx.connections.open(self.ip, "ws", self.sub)
        except StreamError as exc:
            code = (
                CloseCode.POLICY
                if exc.code == ErrorCode.RATE_LIMIT_EXCEEDED
                else CloseCode.GOING_AWAY
            )
            await self._refuse(exc, code)
            return
        self.sub.put(message("connected", self._greeting()))
        reader = asyncio.create_task(self._read(), name=f"ws-read {self.sub.client}")
        writer = asyncio.create_task(self._write(), name=f"ws-write {self.sub.client}")
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer):
                task.cancel()
            results = await asyncio.gather(reader, writer, return_exceptions=True)
            self.ctx.connections.close(self.conn)
            for result in results:
                if isinstance(result, Exception) and not isinstance(result, _SEND_FAILED):
                    log.error("%s: connection task failed", self.sub.client, exc_info=result)

    async def _refuse(self, exc: StreamError, code: int) -> None:
        try:
            await self.ws.send_text(error_message(exc).payload.decode())
            await self.ws.close(code, exc.message[:120])
        except _SEND_FAILED:
            pass

    def _greeting(self) -> dict:
        s = self.settings
        return {
            "version": PROTOCOL_VERSION,
            "server_version": self.ctx.version,
            "server_id": self.ctx.hub.server_id,
            "capabilities": {
                "max_streams_per_connection": s.max_streams_per_connection,
                "supported_tick_types": [t.value for t in TickType],
                "ping_interval_seconds": s.ping_interval,
                "max_message_bytes": s.max_message_bytes,
                "resume": True,
            },
        }

    async def _write(self) -> None:
        """Drain the queue to the socket; then close with the code the connection ended with."""
        sub, conn, timeout = self.sub, self.conn, self.settings.send_timeout
        assert conn is not None
        while True:
            try:
                item = await sub.get()
            except SubscriberClosed:
                break
            try:  # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel
                async with asyncio.timeout(timeout):
                    await self.ws.send_text(item.payload.decode())
            except TimeoutError:
                log.warning(
                    "%s: send blocked for %.1fs, closing as slow consumer", sub.client, timeout
                )
                sub.close(StreamError(ErrorCode.SLOW_CONSUMER, f"a send blocked for {timeout}s"))
                break
            except _SEND_FAILED:
                return
            self.ctx.connections.messages_sent += 1
        code = conn.close_code
        if code is None:
            slow = sub.closed is not None and sub.closed.code == ErrorCode.SLOW_CONSUMER
            code = CloseCode.POLICY if slow else CloseCode.NORMAL
        try:
            # The protocol's own close timeout (serve.py sets it to send_timeout) ends in an
            # abort of the TCP connection, so this returns even if the peer never reads.
            await self.ws.close(code)
        except _SEND_FAILED:
            pass

    async def _read(self) -> None:
        """Validate and act on client messages until the client disconnects."""
        limit = self.settings.max_message_bytes
        conn = self.conn
        assert conn is not None
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if conn.closing:
                continue
            raw = raw_text(msg)
            size = payload_size(raw)
            if size > limit:
                self.sub.put(error_message(too_big(size, limit)))
                conn.finish(CloseCode.MESSAGE_TOO_BIG)
                continue
            request = None
            try:
                request = parse_message(raw)
                await self._handle(request)
            except MessageError as exc:
                self.sub.put(error_message(exc, request_id=exc.request_id))
            except StreamError as exc:
                rid = request.request_id if request is not None else None
                self.sub.put(error_message(exc, request_id=rid))

    async def _handle(self, req: ClientMessage) -> None:
        rid = req.request_id
        sub = self.sub
        if req.type == "ping":
            pong = {
                "client_timestamp": req.data.get("timestamp"),
                "server_timestamp": iso_timestamp(),
            }
            sub.put(message("pong", pong, request_id=rid))
        elif req.type == "unsubscribe":
            assert req.stream_id is not None
            try:
                summary = sub.unsubscribe(req.stream_id)
            except StreamError as exc:
                sub.put(error_message(exc, request_id=rid))
                return
            sub.put(message("unsubscribed", summary, stream_id=req.stream_id, request_id=rid))
        elif req.type == "unsubscribe_all":
            ids = sub.unsubscribe_all()
            sub.put(message("unsubscribed", {"stream_ids": ids}, request_id=rid))
        else:
            await self._subscribe(req)

    async def _subscribe(self, req: ClientMessage) -> None:
        spec = req.subscribe
        assert spec is not None
        rid = req.request_id
        try:
            handles = await self.sub.subscribe(
                spec.contract, spec.tick_types, limit=spec.limit, timeout=spec.timeout
            )
        except StreamError as exc:
            self.sub.put(error_message(exc, request_id=rid))
            return
        except Exception as exc:  # an unexpected source failure must not kill the connection
            log.exception("subscribe %r failed", spec.contract)
            error = StreamError(ErrorCode.INTERNAL_ERROR, f"subscribe failed: {exc}")
            self.sub.put(error_message(error, request_id=rid))
            return
        plan = self.sub.prepare_replay(handles, spec.resume_from)  # sets start_sequence
        self.sub.put(subscribed_message(handles, spec, rid))
        self.sub.start(handles, plan)  # after `subscribed`: the client knows the ids first
