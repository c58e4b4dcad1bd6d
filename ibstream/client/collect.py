"""`collect`: ticks of one or more subscriptions gathered into one tick frame.

`limit` counts ticks over all contracts and tick types together; `seconds` is wall time from
the moment every subscription is open. Ticks go into a columnar `FrameBuilder` as they come
(no per-tick DataFrame work), in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ibstream.client.sinks import SMALL_BATCH
from ibstream.errors import StreamError

if TYPE_CHECKING:
    from ibstream.client.aio import AsyncClient

PROGRESS_EVERY = 0.2  # seconds between progress redraws
Contracts = str | int | Iterable[str | int]


def check_bounds(seconds: float | None, limit: int | None) -> None:
    if seconds is not None and not seconds > 0:
        raise ValueError(f"seconds must be a positive number; got {seconds!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer (ticks in all); got {limit!r}")


class Collection:
    """A sink shared by the subscriptions of one collect(); done at `limit` or on stop()."""

    def __init__(self, limit: int | None, subscriptions: int):
        from ibstream.client.frames import FrameBuilder  # pandas only when frames are built

        self.builder: Any = FrameBuilder()
        self.limit = limit
        self.count = 0
        self.error: StreamError | None = None
        self.started = time.monotonic()
        self.subscriptions: list = []  # set by the client once they are created
        self._open = subscriptions
        self._done = asyncio.Event()

    def put(self, tick: dict) -> None:
        if self._done.is_set():
            return
        self.builder.append(tick)
        self.count += 1
        if self.limit is not None and self.count >= self.limit:
            self._done.set()

    def put_many(self, ticks: list[dict]) -> None:
        """A batch: typed in one go (Arrow), not row by row; small ones join the row list."""
        if self._done.is_set():
            return
        if self.limit is not None:
            ticks = ticks[: self.limit - self.count]
        if len(ticks) >= SMALL_BATCH:
            self.builder.extend(ticks)
        else:
            for tick in ticks:
                self.builder.append(tick)
        self.count += len(ticks)
        if self.limit is not None and self.count >= self.limit:
            self._done.set()

    def end(self, error: StreamError | None = None) -> None:
        """A subscription ended: an error ends the collection, so do all of them ending."""
        self._open -= 1
        if error is not None and self.error is None:
            self.error = error
        if error is not None or self._open <= 0:
            self._done.set()

    def stop(self) -> None:
        self._done.set()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def wait(self, seconds: float | None, on_progress: Any = None) -> None:
        """Until done or `seconds` passed, calling on_progress(count) now and then."""
        self.started = time.monotonic()
        deadline = None if seconds is None else self.started + seconds
        while not self._done.is_set():
            step = PROGRESS_EVERY if on_progress else None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                step = left if step is None else min(step, left)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(step):  # not wait_for: on 3.11 it can eat a cancel
                    await self._done.wait()
            if on_progress is not None:
                on_progress(self.count)

    def frame(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.builder.to_frame()


async def start_collection(
    client: AsyncClient,
    contract: Contracts,
    tick_types: Any,
    seconds: float | None,
    limit: int | None,
    batch_ms: float | None = None,
) -> Collection:
    """Open one subscription per contract, all feeding one `Collection`."""
    check_bounds(seconds, limit)
    contracts = [contract] if isinstance(contract, str | int) else list(contract)
    if not contracts:
        raise ValueError("collect needs at least one contract")
    collection = Collection(limit, len(contracts))
    subs = [client._new_subscription(c, tick_types, collection, batch_ms) for c in contracts]
    collection.subscriptions = subs
    try:
        for sub in subs:
            await client._open(sub)
    except BaseException:
        await finish_collection(client, collection)
        raise
    return collection


async def finish_collection(client: AsyncClient, collection: Collection) -> None:
    """Stop a collection's streams; returns within close_timeout and raises no error of its
    own, so the frame that arrived is never lost to a slow or stalled link."""
    collection.stop()
    for sub in collection.subscriptions:
        client._drop(sub)
    await client._settle()


def describe_contracts(contract: Contracts) -> str:
    if isinstance(contract, str | int):
        return str(contract)
    return ",".join(str(c) for c in contract)
