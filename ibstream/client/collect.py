"""`collect`: ticks of one or more subscriptions gathered into one tick frame.

`limit` counts ticks over all contracts and tick types together; `seconds` is wall time from
the moment every subscription is open. Ticks go into a columnar `FrameBuilder` as they come
(no per-tick DataFrame work), in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ibstream.client import arguments
from ibstream.client.sinks import SMALL_BATCH
from ibstream.client.spread import Room
from ibstream.client.subscription import parse_tick_types
from ibstream.errors import StreamError

if TYPE_CHECKING:
    from ibstream.client.aio import AsyncClient

log = logging.getLogger("ibstream.client")
PROGRESS_EVERY = 0.2  # seconds between progress redraws
Contracts = str | int | Iterable[str | int]


def check_bounds(seconds: float | None, limit: int | None) -> None:
    arguments.maybe(arguments.number, "seconds", seconds)
    arguments.maybe(arguments.count, "limit", limit)


def contract_list(contract: object) -> list[str | int]:
    """`contract` as a list: one spec or conId, or a list (tuple, set ...) of them."""
    if isinstance(contract, str | int) and not isinstance(contract, bool):
        return [contract]
    if isinstance(contract, Iterable) and not isinstance(contract, bytes | Mapping):
        contracts = list(contract)
        if not contracts:
            raise ValueError("contract: collect needs at least one contract; got an empty list")
        return contracts
    raise TypeError(
        "contract must be a spec or conId ('ES', 'AAPL', 265598) or a list of them; "
        f"got {contract!r} ({type(contract).__name__})"
    )


class Part:
    """One subscription's way into a `Collection`. Of subscriptions that resolve to the same
    conId (`["ES", "ES"]`, `["ES", 637533641]`), only the first delivers: otherwise every
    tick would be counted twice (volume, delta)."""

    __slots__ = ("collection", "sub", "silent")

    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self.sub: Any = None
        self.silent: bool | None = None  # None until its contract is known

    def claim(self) -> bool:
        """True when another subscription of this collection already has this contract."""
        if self.silent is None:
            contract_id = self.sub.contract_id if self.sub is not None else None
            if contract_id is None:
                return False
            owner = self.collection.owners.setdefault(contract_id, self)
            self.silent = owner is not self
        return self.silent

    def put(self, tick: dict) -> None:
        if self.silent is False or not self.claim():
            self.collection.put(tick)

    def put_many(self, ticks: list[dict]) -> None:
        if self.silent is False or not self.claim():
            self.collection.put_many(ticks)

    def put_frame(self, table: Any) -> None:
        if self.silent is False or not self.claim():
            self.collection.put_frame(table)

    def end(self, error: StreamError | None = None) -> None:
        self.collection.end(None if self.silent else error)


class Collection:
    """A sink shared by the subscriptions of one collect(); done at `limit` or on stop()."""

    def __init__(self, limit: int | None, subscriptions: int):
        from ibstream.client.frames import FrameBuilder  # pandas only when frames are built

        self.builder: Any = FrameBuilder()
        self.limit = limit
        self.count = 0
        self.error: StreamError | None = None
        self.started = time.monotonic()
        self.subscriptions: list = []  # (helper client or None, Subscription) as opened
        self.owners: dict[int, Part] = {}  # conId -> the part that delivers it
        self.helpers: list[AsyncClient] = []  # extra connections of a wide collection
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

    def put_frame(self, table: Any) -> None:
        """Rows of an Arrow frame (`arrow_frames`): kept as Arrow, typed with the rest at the end."""
        if self._done.is_set():
            return
        if self.limit is not None:
            table = table.slice(0, self.limit - self.count)
        self.builder.extend_arrow(table)
        self.count += table.num_rows
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

    def contracts(self) -> list[dict]:
        """The resolved contracts collected (the server's `subscribed` contract), each once."""
        return [dict(part.sub.contract) for part in self.owners.values() if part.sub.contract]

    def stop_on(self, client: AsyncClient | None, sub: Any) -> None:
        """Remember where `sub` runs (None: the collecting client itself, not held here, so
        that a client nobody references can be freed at once), to stop it at the end."""
        self.subscriptions.append((client, sub))

    def frame(self) -> Any:
        """The tick frame; a stream's error is raised with what arrived before it as `.frame`
        (an hour of ticks is not lost to one refusal)."""
        frame = self.builder.to_frame()
        if not frame.index.is_monotonic_increasing:  # fed by several connections (SSE, or a
            frame = frame.sort_index(kind="stable")  # wide collection): the server's order
        frame.attrs["contracts"] = self.contracts()
        if self.error is not None:
            self.error.frame = frame  # type: ignore[attr-defined]
            raise self.error
        return frame


async def start_collection(
    client: AsyncClient,
    contract: Contracts,
    tick_types: Any,
    seconds: float | None,
    limit: int | None,
    batch_ms: float | None = None,
    frame_format: str = "json",
) -> Collection:
    """Open one subscription per distinct contract, all feeding one `Collection`, spread over
    as many connections as the server's streams-per-connection limit needs (`spread.py`)."""
    check_bounds(seconds, limit)
    contracts = contract_list(contract)
    types = parse_tick_types(arguments.tick_types(tick_types))
    collection = Collection(limit, len(contracts))
    parts = [Part(collection) for _ in contracts]
    for part, spec in zip(parts, contracts, strict=True):  # every spec checked before any opens
        part.sub = client._new_subscription(spec, types, part, batch_ms, frame_format)
    try:
        room = Room(client)
        for part in parts:
            sub = part.sub
            target = await room.take(len(types), collection.helpers)
            collection.stop_on(None if target is client else target, sub)
            await target._open(sub)
            if part.claim():  # a contract already collected: free its streams at once
                log.info("collect: %s is %s again; collected once", sub.spec, sub.contract_id)
                target._drop(sub)
                room.give_back(target, len(types))
    except BaseException:
        await finish_collection(client, collection)
        raise
    return collection


async def finish_collection(client: AsyncClient, collection: Collection) -> None:
    """Stop a collection's streams; returns within close_timeout and raises no error of its
    own, so the frame that arrived is never lost to a slow or stalled link."""
    collection.stop()
    for owner, sub in collection.subscriptions:
        (owner or client)._drop(sub)
    await client._settle()
    helpers, collection.helpers = collection.helpers, []
    if helpers:
        await asyncio.gather(*(helper.close() for helper in helpers), return_exceptions=True)


def describe_contracts(collection: Collection) -> str:
    return ",".join(str(sub.spec) for _, sub in collection.subscriptions)
