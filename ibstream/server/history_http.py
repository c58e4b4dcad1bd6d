"""`GET /v2/history/{contract}`: a history answer as JSON lines, SSE or one Arrow IPC stream.

Everything that can be wrong (the query, the window, the contract, IB needed but away) is
answered as the JSON error body before the response starts; then the messages of
`history.HistoryService.run` go out in the format asked for (`format=`, else `Accept:
text/event-stream` means sse, else jsonl). A response is written as its client reads it:
the service runs a step ahead at most, so memory stays bounded whatever the range.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message as Message_
from starlette.types import Receive, Scope, Send

from ibstream.errors import ErrorCode, StreamError
from ibstream.protocol.http import ERROR_RESPONSES
from ibstream.protocol.requests import HistoryQuery
from ibstream.protocol.validate import parse_history_params
from ibstream.server.history import HistoryService, Message
from ibstream.server.sse import VERSION_HEADER, error_response
from ibstream.server.tick_columns import SCHEMA, Ticks, json_default

if TYPE_CHECKING:
    from ibstream.server.app import ServerContext

log = logging.getLogger(__name__)
MEDIA = {
    "jsonl": "application/x-ndjson",
    "sse": "text/event-stream",
    "arrow": "application/vnd.apache.arrow.stream",
}
_DESCRIPTION = (
    "The ticks of [start, end) from the server's store (`--record`) and, for what it lacks, "
    "from IB's history. jsonl: one `{type, data}` object a line; sse: `event: <type>` and "
    "`data: <data>`; the messages `history_started`, `history_ticks` (at most 5,000 ticks, "
    "oldest first), `history_progress`, then `history_complete` (what is missing said) or "
    "`error` (their `data` as the WebSocket messages of /v2/schema). arrow: one Arrow IPC "
    "stream, the tick columns plus `source`; each batch's custom metadata `progress`, the "
    "first's also `started`, an empty last batch's `complete` (or `error`)."
)


def jsonl(messages: AsyncIterator[Message]) -> AsyncIterator[bytes]:
    async def lines() -> AsyncIterator[bytes]:
        async for kind, data in messages:
            yield orjson.dumps({"type": kind, "data": data}, default=json_default) + b"\n"

    return lines()


def sse(messages: AsyncIterator[Message]) -> AsyncIterator[bytes]:
    async def events() -> AsyncIterator[bytes]:
        async for kind, data in messages:
            yield (
                b"event: "
                + kind.encode()
                + b"\r\ndata: "
                + orjson.dumps(data, default=json_default)
                + b"\r\n\r\n"
            )

    return events()


def _custom(metadata: dict[str, Any]) -> dict[str, bytes]:
    """A batch's custom metadata: each entry's value as JSON."""
    return {k: orjson.dumps(v) for k, v in metadata.items()}


class _Chunks:
    """A write-only file the IPC writer writes into; `take` hands on what it holds."""

    closed = False

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def arrow(messages: AsyncIterator[Message], compression: str = "none") -> AsyncIterator[bytes]:
    """One IPC stream: a batch per progress step (the ticks since the last, custom metadata
    `progress`; the first also `started`), and an empty last batch with `complete` / `error`;
    buffers compressed with `compression` (lz4, zstd; none)."""

    async def stream() -> AsyncIterator[bytes]:
        chunks = _Chunks()
        codec = None if compression == "none" else compression
        options = pa.ipc.IpcWriteOptions(compression=codec, use_threads=False)
        writer = pa.ipc.new_stream(pa.PythonFile(chunks, mode="w"), SCHEMA, options=options)
        held: list[Ticks] = []
        meta: dict[str, Any] = {"progress": {}}
        try:
            async for kind, data in messages:
                if kind == "history_started":
                    meta["started"] = data
                elif kind == "history_ticks":
                    held.append(data["ticks"])
                elif kind == "history_progress":
                    meta["progress"] = data
                    writer.write_batch(Ticks.concat(held).batch(), custom_metadata=_custom(meta))
                    held, meta = [], {"progress": data}
                    yield chunks.take()
                else:  # history_complete or error: the last message
                    if held or "started" in meta:
                        batch = Ticks.concat(held).batch()
                        writer.write_batch(batch, custom_metadata=_custom(meta))
                    end = {**meta, "complete" if kind == "history_complete" else "error": data}
                    end.pop("started", None)
                    writer.write_batch(Ticks.empty().batch(), custom_metadata=_custom(end))
                    writer.close()
                    yield chunks.take()
                    return
        finally:
            if not chunks.closed:
                writer.close()

    return stream()


FORMATS = {"jsonl": jsonl, "sse": sse}  # and arrow, which also takes the compression


class _TimedResponse(StreamingResponse):
    """A streamed answer whose every write gets `send_timeout`: a client that stops reading
    is dropped (with a log line, no traceback) instead of holding the request forever."""

    def __init__(
        self, *args: Any, send_timeout: float, on_close: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.send_timeout = send_timeout
        self.on_close = on_close

    async def stream_response(self, send: Send) -> None:
        async def timed(message: Message_) -> None:
            async with asyncio.timeout(self.send_timeout):
                await send(message)

        await super().stream_response(timed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except TimeoutError:
            log.warning("history client %s stopped reading; answer dropped", scope.get("client"))
        finally:
            self.on_close()
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


async def answer(ctx: ServerContext, request: Request, contract: str) -> Response:
    service: HistoryService = ctx.history
    ip = request.client.host if request.client else "unknown"
    try:
        req, fmt, compression = parse_history_params(contract, request.query_params.multi_items())
        if not fmt:
            accept = request.headers.get("accept", "")
            fmt = "sse" if "text/event-stream" in accept else "jsonl"
        if request.method == "HEAD":
            return Response(headers=VERSION_HEADER, media_type=MEDIA[fmt])
        plan = await service.prepare(req)
        ctx.connections.open_history(ip)  # per IP, as every streaming connection
    except StreamError as exc:
        return error_response(exc)
    except Exception as exc:  # noqa: BLE001 - an answer, not a dropped connection
        return error_response(StreamError(ErrorCode.INTERNAL_ERROR, f"history failed: {exc}"))
    headers = {**VERSION_HEADER, "Cache-Control": "no-store"}
    messages = service.run(plan)
    body = arrow(messages, compression) if fmt == "arrow" else FORMATS[fmt](messages)
    timeout = ctx.settings.send_timeout
    release = functools.partial(_release_once, ctx.connections, ip, [False])
    return _TimedResponse(
        body, media_type=MEDIA[fmt], headers=headers, send_timeout=timeout, on_close=release
    )


def _release_once(connections: Any, ip: str, done: list[bool]) -> None:
    if not done[0]:
        done[0] = True
        connections.close_history(ip)


def parameters() -> list[dict[str, Any]]:
    """OpenAPI parameters, from the model that validates the query."""
    props = HistoryQuery.model_json_schema()["properties"]
    out: list[dict[str, Any]] = [
        {
            "name": "contract",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "a conId (265598) or a symbol spec (AAPL, ES, ES:FUT:CME:202703)",
        }
    ]
    for name, prop in props.items():
        schema = next((s for s in prop.get("anyOf", [prop]) if s.get("type") != "null"), prop)
        out.append(
            {
                "name": name,
                "in": "query",
                "required": name == "start",
                "schema": {k: v for k, v in schema.items() if k not in ("title", "description")},
                "description": prop.get("description", schema.get("description", "")),
            }
        )
    return out


class HistoryResponse(Response):
    media_type = MEDIA["jsonl"]


def routes(ctx: ServerContext) -> list[APIRoute]:
    async def history(request: Request) -> Response:
        return await answer(ctx, request, request.path_params["contract"])

    return [
        APIRoute(
            "/v2/history/{contract}",
            history,
            methods=["GET"],
            response_class=HistoryResponse,
            response_description=_DESCRIPTION,
            responses={
                **ERROR_RESPONSES,
                200: {
                    "description": _DESCRIPTION,
                    "content": {media: {} for media in MEDIA.values()},
                },
            },
            openapi_extra={"parameters": parameters()},
            summary="History of a contract's ticks: store first, IB for the rest",
            tags=["history"],
        )
    ]
