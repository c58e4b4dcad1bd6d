"""One WebSocket connection: the greeting, requests matched to their replies, a reader task.

Replies are matched by id (the top-level `id`, or `data.request_id` from older servers). A
reply's `on_reply` hook runs inside the reader, before any later message is handed on, so a
`subscribed` reply binds its stream ids before the first tick of those streams is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import websockets
from websockets.exceptions import WebSocketException

from ibstream.client.options import ClientOptions
from ibstream.client.transport import connection_error, timeout_error
from ibstream.errors import StreamConnectionError, StreamError, error_from_body
from ibstream.protocol.loopback import is_loopback_url
from ibstream.protocol.redact import redact_logs

log = logging.getLogger("ibstream.client")
redact_logs(["websockets.client"])  # its debug lines show the Authorization header
_REPLIES = frozenset({"subscribed", "unsubscribed", "pong", "error"})
_CONNECT_FAILED = (OSError, TimeoutError, WebSocketException)
OnReply = Callable[[dict], None]


class LinkLost(StreamConnectionError):
    """The connection went before a request was answered: worth retrying on the next one.

    A CONNECTION_ERROR the server itself replies (IB is down) is not this: retrying at once
    would only get the same answer again.
    """


def link_lost(what: str, exc: BaseException | str) -> LinkLost:
    error = connection_error(what, exc)
    return LinkLost(error.code, error.message, details=error.details)


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future
    on_reply: OnReply | None


class Link:
    def __init__(
        self,
        conn: websockets.ClientConnection,
        greeting: dict,
        on_message: Callable[[dict], None],
        on_binary: Callable[[bytes], None] | None = None,
    ):
        self.conn = conn
        self.greeting = greeting
        self.on_message = on_message
        self.on_binary = on_binary  # Arrow tick frames (`format="arrow"`)
        self.last_error: StreamError | None = None  # connection-level error (SLOW_CONSUMER ...)
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self.reader: asyncio.Task[str] = asyncio.create_task(self._read(), name="ibstream-ws")

    @classmethod
    async def open(
        cls,
        url: str,
        headers: dict[str, str],
        options: ClientOptions,
        on_message: Callable[[dict], None],
        on_binary: Callable[[bytes], None] | None = None,
    ) -> Link:
        """Connect and read the greeting within connect_timeout, or raise a typed error."""
        timeout = options.connect_timeout
        try:
            conn = await websockets.connect(
                url,
                additional_headers=headers,
                open_timeout=timeout,
                close_timeout=options.close_timeout,
                max_size=2**24,
                proxy=None if is_loopback_url(url) else True,  # $HTTPS_PROXY only for remote
            )
        except _CONNECT_FAILED as exc:
            raise connection_error(f"cannot connect to {url}", exc, url=url) from None
        try:
            async with asyncio.timeout(timeout):
                greeting = orjson.loads(await conn.recv())
        except (TimeoutError, websockets.ConnectionClosed, orjson.JSONDecodeError) as exc:
            await abort(conn, options.close_timeout)
            raise connection_error(f"no greeting from {url}", exc) from None
        except BaseException:  # cancelled (close(), Ctrl-C): leave no socket behind
            conn.transport.abort()
            raise
        if greeting.get("type") != "connected":
            await abort(conn, options.close_timeout)
            if greeting.get("type") == "error":
                raise error_from_body(greeting.get("data") or {})
            raise connection_error(f"unexpected greeting from {url}", str(greeting)[:200])
        return cls(conn, greeting, on_message, on_binary)

    @property
    def up(self) -> bool:
        return not self.reader.done()

    def _body(self, type_: str, data: dict) -> tuple[str, str]:
        if not self.up:
            raise link_lost(f"cannot send {type_}", "not connected")
        rid = f"c{next(self._ids)}"
        return rid, orjson.dumps({"type": type_, "id": rid, "data": data}).decode()

    async def send(self, type_: str, data: dict) -> None:
        """Send a request whose reply nobody waits for (it is handed on like any message)."""
        _, body = self._body(type_, data)
        try:
            await self.conn.send(body)
        except websockets.ConnectionClosed as exc:
            raise link_lost(f"cannot send {type_}", exc) from None

    async def request(
        self, type_: str, data: dict, timeout: float, on_reply: OnReply | None = None
    ) -> dict:
        """Send a request and return its reply; an `error` reply raises its typed error."""
        rid, body = self._body(type_, data)
        future = asyncio.get_running_loop().create_future()
        self._pending[rid] = _Pending(future, on_reply)
        try:
            async with asyncio.timeout(timeout):
                await self.conn.send(body)
                reply = await future
        except TimeoutError:
            what = f"{type_} {data.get('contract_id', '')}".strip()
            raise timeout_error(what, timeout) from None
        except websockets.ConnectionClosed as exc:
            raise link_lost(f"cannot send {type_}", exc) from None
        finally:
            self._pending.pop(rid, None)
        if reply["type"] == "error":
            raise error_from_body(reply.get("data") or {})
        return reply

    async def _read(self) -> str:
        """Hand messages on until the connection ends; return why it ended."""
        try:
            async for raw in self.conn:
                if isinstance(raw, bytes) and self.on_binary is not None:
                    self.on_binary(raw)  # an Arrow frame: every other message is JSON text
                else:
                    self._dispatch(orjson.loads(raw))
        except websockets.ConnectionClosed:
            pass
        except Exception as exc:  # a broken message must not pass silently
            log.exception("WebSocket reader failed")
            self.conn.transport.abort()
            return f"reader failed: {exc}"
        finally:
            for pending in self._pending.values():
                if not pending.future.done():
                    pending.future.set_exception(link_lost("connection lost", "closed"))
        code, text = self.conn.close_code, self.conn.close_reason
        why = f"connection closed ({code}{': ' + text if text else ''})"
        return why + (f" after {self.last_error.code.value}" if self.last_error else "")

    def _dispatch(self, msg: dict) -> None:
        kind = msg.get("type")
        data = msg.get("data") or {}
        rid = msg.get("id", data.get("request_id"))
        if rid is not None and kind in _REPLIES:
            pending = self._pending.pop(str(rid), None)
            if pending is not None:
                if pending.on_reply is not None and kind != "error":
                    pending.on_reply(data)
                if not pending.future.done():
                    pending.future.set_result(msg)
                return
        if kind == "error" and not msg.get("stream_id") and rid is None:
            self.last_error = error_from_body(data)
        self.on_message(msg)

    async def close(self, timeout: float) -> None:
        """Close handshake within `timeout`, else drop the TCP connection."""
        try:
            async with asyncio.timeout(timeout):
                await self.conn.close()
        except Exception:
            self.conn.transport.abort()
        self.reader.cancel()
        await asyncio.wait([self.reader], timeout=timeout)

    async def abort(self, timeout: float) -> None:
        await abort(self.conn, timeout)


async def abort(conn: websockets.ClientConnection, timeout: float) -> None:
    conn.transport.abort()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout):
            await conn.wait_closed()
