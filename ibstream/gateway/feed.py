"""Drives one contract's market while anyone subscribes and fans its events out.

One asyncio task per contract with at least one subscription: every few milliseconds it
asks the market for the events due at the current rate and writes each to every
subscription of the matching tick type, one write per connection per batch. As on IB, "Last"
omits trades that carry conditions (odd lots, flagged off-exchange prints) which "AllLast"
includes, and a contract without a tape (IDEALPRO cash) sends quotes only. A recording
(`recorded.RecordedMarket`) takes the market's place under `--replay`: its ticks go to the
subscriptions of the tick type they were recorded as. Every event is also kept on the
contract's `Tape`, the past `reqHistoricalTicks` answers from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ibstream.gateway.market import Market, Quote, Trade
from ibstream.gateway.recorded import RecordedMarket, RecordedTick
from ibstream.gateway.tape import Tape
from ibstream.gateway.wire import encode

log = logging.getLogger("ibstream.gateway")

TICK_TYPES = {"Last": 1, "AllLast": 2, "BidAsk": 3, "MidPoint": 4}
BATCH_INTERVAL = 0.005  # seconds between batches


class Sink(Protocol):
    """Where a subscription's bytes go: a client connection."""

    client_id: int

    def write(self, data: bytes) -> None: ...


@dataclass(eq=False, slots=True)
class Subscription:
    sink: Sink
    req_id: int
    con_id: int
    tick_type: str  # IB's name: Last, AllLast, BidAsk or MidPoint
    ignore_size: bool = False
    last_bid: float | None = None
    last_ask: float | None = None
    last_mid: float | None = None

    def encode(self, event: Quote | Trade | RecordedTick, decimals: int) -> bytes | None:
        """This subscription's message for an event, or None when it gets nothing."""
        code = TICK_TYPES[self.tick_type]
        if isinstance(event, RecordedTick):  # a replayed tick goes to its own tick type only
            return encode(99, self.req_id, *event.fields) if event.code == code else None
        stamp = int(event.time)
        if isinstance(event, Trade):
            if code > 2 or (code == 1 and event.conditions):
                return None
            return encode(
                99, self.req_id, code, stamp, event.price, event.size, 0, event.exchange,
                event.conditions,
            )  # fmt: skip
        if code == 3:
            if self.ignore_size and (event.bid, event.ask) == (self.last_bid, self.last_ask):
                return None
            self.last_bid, self.last_ask = event.bid, event.ask
            return encode(
                99, self.req_id, 3, stamp, event.bid, event.ask, event.bid_size, event.ask_size, 0
            )
        if code == 4:
            mid = round(event.mid, decimals + 1)
            if mid == self.last_mid:
                return None
            self.last_mid = mid
            return encode(99, self.req_id, 4, stamp, mid)
        return None


class Feed:
    """One contract's market, its subscriptions and the task that drives them."""

    def __init__(
        self, market: Market | RecordedMarket, on_batch: Callable[[], None], tape: Tape
    ) -> None:
        self.market = market
        self.tape = tape  # every event is kept here, delivered or not (history)
        self.subs: list[Subscription] = []
        self.paused = False  # while True events still happen but nobody receives them
        self._on_batch = on_batch
        self._task: asyncio.Task[None] | None = None
        self._decimals = market.contract.decimals
        self._tape = market.contract.reports_trades  # IDEALPRO cash: quotes, never trades

    def add(self, sub: Subscription) -> None:
        self.subs.append(sub)
        quote = self.market.last_quote
        if quote is not None and not self.paused:
            data = sub.encode(quote, self._decimals)
            if data:
                sub.sink.write(data)
        if self._task is None:
            name = f"gateway-feed-{self.market.contract.con_id}"
            self._task = asyncio.get_running_loop().create_task(self._run(), name=name)

    def remove(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self.subs.remove(sub)
        if not self.subs and self._task is not None:
            self._task.cancel()
            self._task = None

    async def stop(self) -> None:
        self.subs.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def deliver(self, events: list[Quote | Trade] | list[RecordedTick]) -> None:
        chunks: dict[Sink, list[bytes]] = {}
        for event in events:
            if not self._tape and isinstance(event, Trade):
                continue
            for sub in self.subs:
                data = sub.encode(event, self._decimals)
                if data:
                    chunks.setdefault(sub.sink, []).append(data)
        for sink, parts in chunks.items():
            sink.write(b"".join(parts))

    def make_past(self, seconds: float, now: float) -> int:
        """The market's `seconds` before `now`, made at once: batch after batch as `_run`
        makes them (`market.advance`, stamped with the batch's time, kept on the tape),
        delivered to no one. A long past for benches without waiting it out; only before
        anyone subscribes (the market then goes on from where it ended). Events made."""
        if self._task is not None:
            raise RuntimeError("make_past runs before the feed's first subscription")
        made, steps = 0, int(seconds / BATCH_INTERVAL)
        for step in range(1, steps + 1):
            events = self.market.advance(BATCH_INTERVAL, now - seconds + step * BATCH_INTERVAL)
            if events:
                self.tape.record(events)
                made += len(events)
        return made

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        try:
            while self.subs:
                await asyncio.sleep(BATCH_INTERVAL)
                now = loop.time()
                events = self.market.advance(now - last, time.time())
                last = now
                if events:
                    self.tape.record(events)
                    if not self.paused:
                        self.deliver(events)
                    self._on_batch()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("feed for conId %s failed", self.market.contract.con_id)
