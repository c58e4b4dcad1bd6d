"""The handle `AsyncClient.stream()` returns: a live subscription to iterate or to close.

An iterated stream lives as long as its handle: once the handle is garbage (a `for` left
with `break`, a notebook cell run again) a finaliser unsubscribes it, so streams a user
walks away from do not pile up on the server. Close it yourself (`with` / `async with`,
`close()`) to have that happen at a known moment. A stream with `on_tick` runs until it is
closed or unsubscribed, or the client closes: the callback is its consumer, not the handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

from ibstream.client.sinks import AsyncInbox, CallbackSink, Sink
from ibstream.client.subscription import Subscription
from ibstream.errors import StreamError

if TYPE_CHECKING:
    from ibstream.client.aio import AsyncClient


def release_when_dropped(
    handle: object, client: AsyncClient, sub: Subscription, loop: asyncio.AbstractEventLoop
) -> weakref.finalize:
    """Unsubscribe `sub` on `loop` once `handle` is garbage (detach it on a regular close)."""
    finalizer = weakref.finalize(handle, _release, client, sub, loop)
    finalizer.atexit = False  # at interpreter exit the loop is gone anyway
    return finalizer


def _release(client: AsyncClient, sub: Subscription, loop: asyncio.AbstractEventLoop) -> None:
    if sub.active:  # runs in whichever thread dropped the handle: hand it to the loop
        client._release(sub)
        with contextlib.suppress(RuntimeError):  # that loop is closed: nothing runs any more
            loop.call_soon_threadsafe(client._drop_released)


class SubscriptionView:
    """Read-only facts about a subscription, shared by the async and sync handles."""

    _sub: Subscription | None
    _finalizer: weakref.finalize | None = None

    @property
    def subscription(self) -> Subscription | None:
        return self._sub

    @property
    def contract(self) -> dict:
        """The resolved contract (`contract_id`, `symbol`, `local_symbol`, `min_tick` ...)."""
        return self._sub.contract if self._sub else {}

    @property
    def contract_id(self) -> int | None:
        return self._sub.contract_id if self._sub else None

    @property
    def positions(self) -> dict[str, int]:
        """Last sequence received per tick type (where a reconnect resumes)."""
        return dict(self._sub.positions) if self._sub else {}

    @property
    def received(self) -> int:
        return self._sub.received if self._sub else 0

    @property
    def duplicates(self) -> int:
        """Ticks dropped because they were already received (replays after a reconnect)."""
        return self._sub.duplicates if self._sub else 0

    @property
    def active(self) -> bool:
        return self._sub is not None and self._sub.active

    @property
    def error(self) -> Exception | None:
        return self._sub.error if self._sub else None


class AsyncStream(SubscriptionView):
    """`await client.stream(...)` opens it; `async for tick in ...` opens it on first use;
    `async with client.stream(...) as ticks:` closes it on exit. Ticks are the `data` dicts of
    the wire's tick messages. With `on_tick`, ticks go to the callback instead."""

    def __init__(
        self,
        client: AsyncClient,
        contract: object,
        tick_types: Iterable[str],
        on_tick: Callable[[dict], Any] | None,
        max_queue: int,
        batch_ms: float | None = None,
        frame_format: str = "json",
    ):
        self._client = client
        self._inbox = None if on_tick else AsyncInbox(max_queue)
        sink: Sink = CallbackSink(on_tick) if on_tick else self._inbox  # type: ignore[assignment]
        self._pending: Subscription | None = client._new_subscription(
            contract, tick_types, sink, batch_ms, frame_format
        )
        self._sub = None

    async def open(self) -> AsyncStream:
        if self._pending is not None:
            sub, self._pending = self._pending, None
            try:
                await self._client._open(sub)
            except BaseException as exc:  # end the inbox too: iterating later must not hang
                if isinstance(exc, StreamError):
                    sub.fail(exc)
                else:
                    sub.finish()
                raise
            self._sub = sub
            if self._inbox is not None:
                loop = asyncio.get_running_loop()
                self._finalizer = release_when_dropped(self, self._client, sub, loop)
        return self

    def __await__(self) -> Generator[Any, None, AsyncStream]:
        return self.open().__await__()

    async def __aenter__(self) -> AsyncStream:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> dict:
        if self._inbox is None:
            raise TypeError("this stream delivers its ticks to on_tick; it is not iterable")
        await self.open()
        return await self._inbox.get()

    async def close(self) -> None:
        """Unsubscribe (within close_timeout, whatever the server does); iteration then ends."""
        if self._pending is not None:  # never opened
            self._pending.finish()
            self._pending = None
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._sub is not None:
            await self._client._close_subscription(self._sub)

    async def aclose(self) -> None:
        """The same as `close()` (the name async generators use)."""
        await self.close()
