"""Async WebSocket client for the ibstream server.

    async with StreamClient("ws://127.0.0.1:8001/v2/ws/stream") as client:
        streams = await client.subscribe("ES", ["bid_ask", "last"], timeout_seconds=20)
        async for msg in client.messages():
            ...

Replies to requests (subscribed, unsubscribed, pong, error with a request id) are matched
to the request that caused them; everything else arrives through `messages()` in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

import orjson
import websockets

from ibstream.errors import ErrorCode, StreamError

_REPLIES = {"subscribed", "unsubscribed", "pong", "error"}


class StreamClient:
    def __init__(self, url: str, *, max_queue: int = 100_000, open_timeout: float = 10.0):
        self.url = url
        self.open_timeout = open_timeout
        self.greeting: dict = {}
        self.open_streams: set[str] = set()
        self._ws: websockets.ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future] = {}
        self._inbox: asyncio.Queue[dict | None] = asyncio.Queue(max_queue)
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> StreamClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> dict:
        self._ws = await websockets.connect(
            self.url, open_timeout=self.open_timeout, max_size=2**22
        )
        self.greeting = orjson.loads(await self._ws.recv())
        if self.greeting.get("type") != "connected":
            raise StreamError(ErrorCode.CONNECTION_ERROR, f"unexpected greeting {self.greeting}")
        self._reader = asyncio.create_task(self._read())
        return self.greeting

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def request(self, type_: str, data: dict | None = None) -> dict:
        """Send one request and wait for its reply; an `error` reply raises StreamError."""
        assert self._ws is not None, "call connect() first"
        request_id = str(next(self._ids))
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._ws.send(
                orjson.dumps({"type": type_, "id": request_id, "data": data or {}}).decode()
            )
        except websockets.ConnectionClosed as exc:
            self._pending.pop(request_id, None)
            raise StreamError(
                ErrorCode.CONNECTION_ERROR, f"connection to {self.url} is closed ({exc})"
            ) from None
        try:
            reply = await future
        finally:  # a cancelled or timed-out request must not leave its future behind
            self._pending.pop(request_id, None)
        if reply["type"] == "error":
            body = reply["data"]
            raise StreamError(
                body["code"],
                body["message"],
                details=body.get("details"),
                recoverable=body.get("recoverable"),
            )
        return reply

    async def subscribe(
        self,
        contract: str | int,
        tick_types: list[str],
        *,
        limit: int | None = None,
        timeout_seconds: float | None = None,
    ) -> dict:
        """Open one stream per tick type; returns the `subscribed` data (contract, streams)."""
        config = {k: v for k, v in (("limit", limit), ("timeout_seconds", timeout_seconds)) if v}
        reply = await self.request(
            "subscribe", {"contract_id": contract, "tick_types": tick_types, "config": config}
        )
        self.open_streams.update(s["stream_id"] for s in reply["data"]["streams"])
        return reply["data"]

    async def unsubscribe(self, stream_id: str) -> dict:
        """Close one stream; returns its final counters."""
        data = (await self.request("unsubscribe", {"stream_id": stream_id}))["data"]
        self.open_streams.discard(stream_id)
        return data

    async def unsubscribe_all(self) -> list[str]:
        ids = (await self.request("unsubscribe_all"))["data"]["stream_ids"]
        self.open_streams.difference_update(ids)
        return ids

    async def messages(self, *, until_complete: bool = True) -> AsyncIterator[dict]:
        """Ticks, infos, stream errors and completes, in the order the server sent them.

        Ends when the connection closes or, with `until_complete`, after the `complete` of
        the last open stream (so a stream with a limit or timeout ends the loop by itself).
        """
        while (msg := await self._inbox.get()) is not None:
            if msg["type"] == "complete":
                self.open_streams.discard(msg.get("stream_id"))
            yield msg
            if until_complete and msg["type"] == "complete" and not self.open_streams:
                return

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                msg = orjson.loads(raw)
                request_id = msg.get("data", {}).get("request_id")
                future = (
                    self._pending.pop(str(request_id), None) if request_id is not None else None
                )
                if future is not None and msg["type"] in _REPLIES:
                    if not future.done():  # the requester may have given up (cancelled)
                        future.set_result(msg)
                else:
                    await self._inbox.put(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(
                        StreamError(ErrorCode.CONNECTION_ERROR, "connection closed")
                    )
            await self._inbox.put(None)
