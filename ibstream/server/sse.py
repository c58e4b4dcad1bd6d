"""SSE streams: one HTTP response per subscription, for browsers' EventSource and curl.

`GET /v2/stream/{contract_id}/{tick_type}` and `GET /v2/stream/{contract_id}?tick_types=...`
with `limit`, `timeout` (seconds), `batch_ms` and `resume_from` (or the `Last-Event-ID`
header). Everything that can be wrong is checked before the response starts, so those errors
are plain JSON HTTP errors; once streaming, the first event is `subscribed`, ticks carry their
sequence as the SSE id (a `ticks` frame its streams' last ones), and the response ends after the last
stream's `complete` event. The routes themselves are declared in `published.py` (OpenAPI).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ibstream.errors import ErrorCode, StreamError
from ibstream.protocol.encode import PROTOCOL_VERSION, Outgoing
from ibstream.protocol.validate import parse_sse_params
from ibstream.server.subscriber import Subscriber, SubscriberClosed, subscribed_message

if TYPE_CHECKING:
    from ibstream.server.app import ServerContext
    from ibstream.server.connections import Connection

log = logging.getLogger(__name__)
VERSION_HEADER = {"X-IB-Stream-Version": PROTOCOL_VERSION}
_CHUNK_EVENTS = 256  # events written per chunk when the client is behind


def error_response(error: StreamError) -> JSONResponse:
    return JSONResponse({"error": error.body()}, error.http_status, headers=VERSION_HEADER)


def encode_event(item: Outgoing, event_id: str | None = None) -> bytes:
    """SSE framing; orjson output never holds a raw newline, so `data:` is one line."""
    head = b"id: " + event_id.encode() + b"\r\n" if event_id else b""
    return head + b"event: " + item.event.encode() + b"\r\ndata: " + item.payload + b"\r\n\r\n"


class EventIds:
    """SSE ids that let `Last-Event-ID` resume every stream of a response exactly.

    One tick type: the tick's sequence (`42`). Several: every stream's position
    (`bid_ask:50,last:3`), because sequences are counted per tick type. Positions start at
    each stream's `start_sequence` (its resume position when the client resumed).
    """

    def __init__(self, handles: list) -> None:
        self.types = {h.stream_id: h.tick_type.value for h in handles}
        self.positions = {h.tick_type.value: h.start_sequence for h in handles}

    def for_item(self, item: Outgoing) -> str | None:
        if item.spans is not None:  # a `ticks` frame: where each of its streams got to
            for stream_id, (_, last) in item.spans.items():
                if stream_id in self.types:
                    self.positions[self.types[stream_id]] = last
        elif item.sequence is None or item.stream_id not in self.types:
            return None
        else:
            self.positions[self.types[item.stream_id]] = item.sequence
        if len(self.positions) == 1:
            return str(next(iter(self.positions.values())))
        return ",".join(f"{t}:{n}" for t, n in self.positions.items())


class _StreamResponse(EventSourceResponse):
    """Releases the connection however the response ends (even if the body never started),
    and drops a client that leaves a chunk unread for `send_timeout` without a traceback."""

    def __init__(self, *args: Any, on_close: Callable[[], None], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.warning("SSE client %s stopped reading; stream dropped", scope.get("client"))
        finally:
            self._on_close()


async def open_stream(
    ctx: ServerContext, request: Request, contract: str, tick_type: str | None
) -> Response:
    settings = ctx.settings
    ip = request.client.host if request.client else "unknown"
    sub = Subscriber(
        ctx.hub,
        client=f"sse {ip}:{request.client.port if request.client else 0}",
        max_streams=settings.max_streams_per_connection,
        queue_size=settings.queue_size,
        replay_size=settings.replay_size,
    )
    conn: Connection | None = None
    try:
        req = parse_sse_params(
            contract,
            tick_type,
            request.query_params.multi_items(),
            request.headers.get("last-event-id"),
        )
        conn = ctx.connections.open(ip, "sse", sub)
        sub.on_slow = partial(ctx.connections.close, conn)  # its slot goes at once
        handles = await sub.subscribe(
            req.contract,
            req.tick_types,
            limit=req.limit,
            timeout=req.timeout,
            batch_ms=getattr(req, "batch_ms", None),
            start_ns=req.start,
        )
        plan = sub.prepare_replay(handles, req.resume_from)  # no await since subscribe
        ids = EventIds(handles)  # after the plan: positions start where the client resumes
        first = subscribed_message(handles, req)
        sub.start(handles, plan)  # queued behind `first`, ahead of any live tick
    except StreamError as exc:
        if conn is not None:
            ctx.connections.close(conn)
        return error_response(exc)
    except Exception as exc:
        log.exception("SSE subscribe %r failed", contract)
        if conn is not None:
            ctx.connections.close(conn)
        return error_response(StreamError(ErrorCode.INTERNAL_ERROR, f"subscribe failed: {exc}"))
    return _StreamResponse(
        events(ctx, conn, first, ids),
        headers=VERSION_HEADER,
        ping=settings.sse_ping_interval,
        send_timeout=settings.send_timeout,
        on_close=lambda: ctx.connections.close(conn),
    )


async def events(
    ctx: ServerContext, conn: Connection, first: Outgoing, ids: EventIds
) -> AsyncIterator[bytes]:
    """Yield framed events until every stream completed or the subscriber closed."""
    sub = conn.subscriber
    observe = ctx.settings.sent_observer
    try:
        if observe is not None:
            observe(first.payload)
        yield encode_event(first)
        while True:
            try:
                item = await sub.get()
            except SubscriberClosed:
                return
            items = [item]
            while len(items) < _CHUNK_EVENTS and (more := sub.get_nowait()) is not None:
                items.append(more)
            if observe is not None:
                for each in items:
                    observe(each.payload)
            chunk = [encode_event(each, ids.for_item(each)) for each in items]
            yield b"".join(chunk)
            ctx.connections.messages_sent += len(chunk)
            if not sub.streams and not sub.queued:
                return
    finally:
        ctx.connections.close(conn)
