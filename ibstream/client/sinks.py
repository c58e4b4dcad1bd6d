"""Where a subscription's ticks go. Every `put` returns at once: the reader never waits.

Iterators get a bounded inbox each. When a consumer falls `max_queue` ticks behind, its inbox
stops taking ticks (`put` returns the error, and the subscription is ended and unsubscribed)
and, once the consumer has drained what is queued, raises `SlowConsumer` to that consumer
alone; the connection and every other consumer carry on. Callbacks run on
the client's event loop, inline with the reader: a slow callback slows the connection (and
the server may then drop it as a slow consumer, after which the client resumes).

A batched frame arrives as one list (`put_many`): inboxes and callbacks still see one tick
dict per tick, exactly the `data` of a tick message; buffers and collections take the list
whole.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from ibstream.errors import ErrorCode, StreamError

log = logging.getLogger("ibstream.client")
# Batches smaller than this are appended row by row: typing a few rows in Arrow costs more
# (fixed cost per call) than appending them to the rows typed later in bulk.
SMALL_BATCH = 1024


class Sink(Protocol):
    def put(self, tick: dict) -> StreamError | None:
        """Take a tick; an error once this sink takes no more (its consumer fell behind)."""

    def end(self, error: StreamError | None = None) -> None: ...


def put_many(sink: Sink, ticks: list[dict]) -> StreamError | None:
    """Hand a batch's items to a sink: whole when it has `put_many`, else tick by tick."""
    many = getattr(sink, "put_many", None)
    if many is not None:
        return many(ticks)
    for tick in plain(ticks):
        overflow = sink.put(tick)
        if overflow is not None:
            return overflow
    return None


def plain(items: list[dict]) -> list[dict]:
    """Batch items as tick `data` dicts: without the item's `stream_id` and own `timestamp`
    (in place)."""
    for item in items:
        item.pop("timestamp", None)
        item.pop("stream_id", None)
    return items


def overflow_error(max_queue: int) -> StreamError:
    return StreamError(
        ErrorCode.SLOW_CONSUMER,
        f"this iterator fell {max_queue} ticks behind and was stopped (ticks after that were "
        "not kept for it); pull faster, pass on_tick=, use collect() or buffer(), or raise "
        "max_queue",
        details={"max_queue": max_queue},
        recoverable=False,
    )


class AsyncInbox:
    """A bounded inbox read by `async for` on the client's own loop."""

    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self._items: deque[dict] = deque()
        self._done = False
        self._error: StreamError | None = None
        self._wakeup = asyncio.Event()

    def put(self, tick: dict) -> StreamError | None:
        if self._done:
            return self._error
        if len(self._items) >= self.max_queue:
            self.end(overflow_error(self.max_queue))
            return self._error
        self._items.append(tick)
        self._wakeup.set()
        return None

    def put_many(self, ticks: list[dict]) -> StreamError | None:
        if self._done:
            return self._error
        room = self.max_queue - len(self._items)
        self._items.extend(plain(ticks[:room]))
        self._wakeup.set()
        if len(ticks) > room:
            self.end(overflow_error(self.max_queue))
        return self._error

    def end(self, error: StreamError | None = None) -> None:
        if not self._done:
            self._done, self._error = True, error
            self._wakeup.set()

    async def get(self) -> dict:
        """The next tick; StopAsyncIteration once ended, or the error it ended with."""
        while not self._items:
            if self._done:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)


class ThreadInbox:
    """A bounded inbox filled on the client's loop thread and read from any other thread."""

    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self._items: deque[dict] = deque()
        self._done = False
        self._error: StreamError | None = None
        self._cond = threading.Condition()

    def put(self, tick: dict) -> StreamError | None:
        with self._cond:
            if self._done:
                return self._error
            if len(self._items) >= self.max_queue:
                self._done, self._error = True, overflow_error(self.max_queue)
            else:
                self._items.append(tick)
            self._cond.notify_all()
            return self._error

    def put_many(self, ticks: list[dict]) -> StreamError | None:
        with self._cond:
            if self._done:
                return self._error
            room = self.max_queue - len(self._items)
            self._items.extend(plain(ticks[:room]))
            if len(ticks) > room:
                self._done, self._error = True, overflow_error(self.max_queue)
            self._cond.notify_all()
            return self._error

    def end(self, error: StreamError | None = None) -> None:
        with self._cond:
            if not self._done:
                self._done, self._error = True, error
                self._cond.notify_all()

    def get(self, timeout: float | None = None) -> dict:
        """The next tick; StopIteration once ended, TimeoutError if none came in `timeout`."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._done, timeout):
                raise TimeoutError(f"no tick within {timeout} s")
            if self._items:
                return self._items.popleft()
            if self._error is not None:
                raise self._error
            raise StopIteration

    def __len__(self) -> int:
        return len(self._items)


class CallbackSink:
    """Calls `on_tick(tick)` for every new tick; a callback that raises is logged, not fatal."""

    def __init__(self, on_tick: Callable[[dict], object]):
        self.on_tick = on_tick
        self.failures = 0

    def put(self, tick: dict) -> None:
        try:
            self.on_tick(tick)
        except Exception:
            self.failures += 1
            if self.failures <= 3 or self.failures % 1000 == 0:
                log.exception("on_tick callback failed (%d time(s))", self.failures)

    def end(self, error: StreamError | None = None) -> None:
        pass


class BufferSink:
    """Keeps a `TickBuffer` filled (its append is cheap and thread-safe for one writer)."""

    def __init__(self, buffer: object):
        self.buffer = buffer

    def put(self, tick: dict) -> None:
        self.buffer.append(tick)  # type: ignore[attr-defined]

    def put_many(self, ticks: list[dict]) -> None:
        if len(ticks) >= SMALL_BATCH:
            self.buffer.extend(ticks)  # type: ignore[attr-defined]
        else:
            for tick in ticks:
                self.buffer.append(tick)  # type: ignore[attr-defined]

    def end(self, error: StreamError | None = None) -> None:
        pass
