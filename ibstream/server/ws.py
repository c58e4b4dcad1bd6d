"""WebSocket endpoint `/v2/ws/stream`: many streams per connection, controlled by messages.

Each connection runs a reader and a writer task. The reader validates client messages and
answers through the connection's `Subscriber` queue; a subscribe (which may wait on an IB
contract lookup) runs as its own task, so ping, unsubscribe and other subscribes are not held
up. The writer (`ws_writer.Writer`) is the only task that sends. The hub never waits on
either, so a client that stops reading only fills its own bounded queue and is then told
(SLOW_CONSUMER, close 1008) while everyone else keeps streaming.

Bad input never ends the connection except for an oversized message (INVALID_MESSAGE, then
close 1009). An unknown contract is an `error` reply (CONTRACT_NOT_FOUND): close code 4002 is
not used, so one bad subscribe cannot tear down the other streams of the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from ibstream.errors import CloseCode, ErrorCode, StreamError
from ibstream.model import TickType, iso_timestamp
from ibstream.protocol.encode import PROTOCOL_VERSION, Outgoing, encodable, error_message, message
from ibstream.protocol.validate import ClientMessage, MessageError, parse_message
from ibstream.server import ws_history as history
from ibstream.server.subscriber import Subscriber, subscribed_message
from ibstream.server.ws_writer import SEND_FAILED, Writer

if TYPE_CHECKING:
    from ibstream.server.app import ServerContext
    from ibstream.server.connections import Connection
    from ibstream.server.stream import StreamHandle

log = logging.getLogger(__name__)
MAX_HISTORIES = 4  # history requests under way at once on one connection


class StreamEndpoint:
    """The ASGI app of the route: the writer sends on uvicorn's `send` itself."""

    def __init__(self, ctx: ServerContext):
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await StreamSession(WebSocket(scope, receive, send), send, self.ctx).run()


def routes(ctx: ServerContext) -> list[BaseRoute]:
    return [WebSocketRoute("/v2/ws/stream", StreamEndpoint(ctx))]


def too_big(size: int, limit: int) -> StreamError:
    return StreamError(
        ErrorCode.INVALID_MESSAGE,
        f"message of {size} bytes exceeds the limit of {limit} bytes; the connection closes (1009)",
        details={"size": size, "max_message_bytes": limit},
    )


def pong(req: ClientMessage) -> Outgoing:
    """The answer to a ping: `client_timestamp` is the ping's `data.timestamp`, else its
    top-level `timestamp` (the original v2 protocol's), as sent (made encodable)."""
    sent = req.data.get("timestamp", req.timestamp)
    data = {"client_timestamp": encodable(sent), "server_timestamp": iso_timestamp()}
    return message("pong", data, request_id=req.request_id)


def raw_text(msg: dict) -> str | bytes:
    text = msg.get("text")
    return text if text is not None else (msg.get("bytes") or b"")


def payload_size(raw: str | bytes) -> int:
    return len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))


class StreamSession:
    """One `/v2/ws/stream` connection."""

    def __init__(
        self,
        websocket: WebSocket,
        send: Send,
        ctx: ServerContext,
    ):
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
            replay_size=self.settings.replay_size,
        )
        self.sub.on_slow = self._release
        self.writer = Writer(websocket, send, self.sub, self.settings, ctx.connections)
        self.conn: Connection | None = None
        self.subscribing: set[asyncio.Task[None]] = set()
        self.reserved = 0  # streams of subscribes still under way
        self.histories: dict[object, asyncio.Task[None]] = {}  # request id -> its task

    def _release(self) -> None:
        if self.conn is not None:
            self.ctx.connections.close(self.conn)

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
            await self.writer.refuse(exc, code)
            return
        self.sub.put(message("connected", self._greeting()))
        reader = asyncio.create_task(self._read(), name=f"ws-read {self.sub.client}")
        writer = asyncio.create_task(self.writer.run(self.conn), name=f"ws-write {self.sub.client}")
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tasks = [reader, writer, *self.subscribing]
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            self.ctx.connections.close(self.conn)
            for result in results:
                if isinstance(result, Exception) and not isinstance(result, SEND_FAILED):
                    log.error("%s: connection task failed", self.sub.client, exc_info=result)

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

    async def _read(self) -> None:
        """Validate and act on client messages until the client disconnects."""
        limit = self.settings.max_message_bytes
        conn = self.conn
        assert conn is not None
        while True:
            try:
                msg = await self.ws.receive()
            except WebSocketDisconnect:
                return
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
            try:
                self._handle(parse_message(raw))
            except MessageError as exc:
                self.sub.put(error_message(exc, request_id=exc.request_id))
            except Exception:  # a bug of ours: the client gets an answer, the reader lives
                log.exception("%s: request failed", self.sub.client)
                error = StreamError(ErrorCode.INTERNAL_ERROR, "request failed; retry")
                self.sub.put(error_message(error))

    def _handle(self, req: ClientMessage) -> None:
        rid = req.request_id
        sub = self.sub
        if req.type == "ping":
            sub.put(pong(req))
        elif req.type == "unsubscribe":
            assert req.stream_id is not None
            try:
                summary = sub.unsubscribe(req.stream_id)
            except StreamError as exc:
                sub.put(error_message(exc, request_id=rid))
                return
            sub.put(message("unsubscribed", summary, stream_id=req.stream_id, request_id=rid))
        elif req.type == "unsubscribe_all":
            if self.subscribing:  # they came first: they end too, as if run in order
                self._spawn(self._unsubscribe_all_after(list(self.subscribing), rid))
            else:
                ids = sub.unsubscribe_all()
                sub.put(message("unsubscribed", {"stream_ids": ids}, request_id=rid))
        elif req.type in ("history", "history_cancel"):
            self._history_request(req)
        else:
            self._start_subscribe(req)

    def _history_request(self, req: ClientMessage) -> None:
        """Start a `history` (its own task, answered with its id) or cancel one."""
        rid = req.request_id
        problem = None
        if rid is None:
            problem = StreamError(
                ErrorCode.INVALID_MESSAGE,
                f"'{req.type}' needs an 'id': the answers carry it",
                details={"field": "id"},
            )
        elif req.type == "history_cancel":
            task = self.histories.get(rid)
            if task is None:
                problem = StreamError(
                    ErrorCode.STREAM_NOT_FOUND,
                    f"no history request with id {rid!r} is under way",
                    details={"field": "id"},
                )
            else:
                task.cancel()
        elif rid in self.histories:
            problem = StreamError(
                ErrorCode.INVALID_MESSAGE,
                f"a history request with id {rid!r} is under way: give each its own id",
                details={"field": "id"},
            )
        elif len(self.histories) >= MAX_HISTORIES:
            problem = StreamError(
                ErrorCode.RATE_LIMIT_EXCEEDED,
                f"at most {MAX_HISTORIES} history requests at once per connection; wait for "
                "one to complete or cancel it (history_cancel)",
                details={"max_histories": MAX_HISTORIES},
            )
        if problem is not None:
            self.sub.put(error_message(problem, request_id=rid))
            return
        if req.type == "history":
            task = asyncio.create_task(
                history.answer(self.ctx, self.sub, req), name=f"ws-history {rid!r}"
            )
            self.histories[rid] = task
            self.subscribing.add(task)
            task.add_done_callback(self.subscribing.discard)
            task.add_done_callback(lambda _: self.histories.pop(rid, None))

    async def _unsubscribe_all_after(self, pending: list[asyncio.Task], rid: object) -> None:
        """`unsubscribe_all` behind subscribes still waiting on IB: the streams open now and
        those the pending subscribes open are ended; later subscribes are left alone."""
        targets = set(self.sub.streams)
        for result in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(result, list):
                targets.update(handle.stream_id for handle in result)
        ids = [sid for sid in targets if sid in self.sub.streams]
        for sid in ids:
            self.sub.unsubscribe(sid)
        self.sub.put(message("unsubscribed", {"stream_ids": ids}, request_id=rid))

    def _start_subscribe(self, req: ClientMessage) -> None:
        """Run the subscribe as a task; its streams are reserved until it ends, so subscribes
        under way together cannot exceed max_streams (which also bounds the tasks)."""
        assert req.subscribe is not None
        wanted = len(req.subscribe.tick_types)
        open_ = len(self.sub.streams)
        limit = self.sub.max_streams
        if open_ + self.reserved + wanted > limit:
            error = StreamError(
                ErrorCode.RATE_LIMIT_EXCEEDED,
                f"at most {limit} streams per connection; {open_} open, {self.reserved} being "
                f"subscribed, {wanted} requested: unsubscribe first",
                details={"max_streams": limit, "open_streams": open_, "pending": self.reserved},
            )
            self.sub.put(error_message(error, request_id=req.request_id))
            return
        self._spawn(self._subscribe(req), reserve=wanted)

    def _spawn(self, work: Coroutine[Any, Any, object], reserve: int = 0) -> None:
        """Run a request that may wait, as a task ended with the connection; `reserve`
        streams count against max_streams until it is done."""
        self.reserved += reserve
        task = asyncio.create_task(work, name=f"ws-request {self.sub.client}")
        self.subscribing.add(task)

        def done(task: asyncio.Task) -> None:
            self.subscribing.discard(task)
            self.reserved -= reserve

        task.add_done_callback(done)

    async def _subscribe(self, req: ClientMessage) -> list[StreamHandle] | None:
        """Subscribe, reply `subscribed`, start the replay. Any failure on the way leaves
        nothing attached (the streams are abandoned, their upstream too if no one else
        holds it) and answers an `error` with the request's id."""
        spec = req.subscribe
        assert spec is not None
        rid = req.request_id
        handles: list[StreamHandle] = []
        told = False  # `subscribed` queued: the client knows the stream ids
        try:
            handles = await self.sub.subscribe(
                spec.contract,
                spec.tick_types,
                limit=spec.limit,
                timeout=spec.timeout,
                batch_ms=spec.batch_ms,
                start_ns=spec.start,
                frame_format=spec.format,
            )
            plan = self.sub.prepare_replay(handles, spec.resume_from)  # sets start_sequence
            self.sub.put(subscribed_message(handles, spec, rid))
            told = True
            self.sub.start(handles, plan)  # after `subscribed`: the client knows the ids first
            return handles
        except StreamError as exc:
            error = exc
        except Exception as exc:  # a failure of ours must not kill the connection
            log.exception("%s: subscribe %r failed", self.sub.client, spec.contract)
            error = StreamError(
                ErrorCode.INTERNAL_ERROR,
                f"subscribe failed ({type(exc).__name__}); nothing was subscribed, retry",
            )
        self.sub.abandon(handles, told)
        self.sub.put(error_message(error, request_id=rid))
        return None
