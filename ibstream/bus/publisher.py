"""Every numbered tick and source event onto JetStream, in order, acknowledged.

The hub hands each tick over (`tick`) as the `EncodedTick` it already made, without
awaiting: the publisher adds it to its stream's open pack (`wire.py`: the ticks of one
stream in one message), and every GATHER_SECONDS, before an event, or when a pack is full,
the open packs go into a bounded buffer and wake its sender
(`sender.py`: publishes at once, one ack per batch), which takes a message off the buffer
only when JetStream acknowledged it, so after a lost connection or a refused publish it
sends again from the first unacknowledged message, with the same message id: JetStream
drops the copies it already holds.

While NATS is away the buffer fills; past `capacity` ticks the oldest pack goes (events stay),
counted, with one warning per outage, and an event (`bus_overflow`) goes on the bus ahead
of the surviving ticks naming the ranges lost per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from ibstream.bus import wire
from ibstream.bus.events import EventMaker, Message, is_tick
from ibstream.bus.sender import ACK_TIMEOUT, BATCH, BATCHES, Sender
from ibstream.model import ContractInfo, TickType
from ibstream.protocol.encode import EncodedTick

if TYPE_CHECKING:
    from ibstream.bus.link import BusLink
    from ibstream.ib.source import SourceEvent

log = logging.getLogger(__name__)
# Ticks gather this long into their streams' packs before they are sent, so one message
# (and one pass of the sender) carries what arrived meanwhile instead of one per tick: the
# bus lags the server's own clients by at most this, and costs it and nats-server a fraction
# of the CPU per tick.
GATHER_SECONDS = 0.001
RETRY_PAUSE = 0.2  # after a refused publish (no stream leader yet ...), before sending again
Key = tuple[int, TickType]


class BusPublisher:
    """The hub's `bus` member: buffers, publishes in order, re-sends what was not acked."""

    def __init__(self, link: BusLink, server_id: str, *, capacity: int = 200_000):
        if capacity < 1:
            raise ValueError(f"the bus buffer holds at least 1 tick, not {capacity}")
        self.link = link
        self.server_id = server_id
        self.capacity = capacity
        self.events = EventMaker(server_id)
        self.buffer: deque[Message] = deque()
        self.ticks = 0  # in the buffer's packs
        self.published = 0  # ticks and events acknowledged by JetStream
        self.dropped = 0  # ticks gone from a full buffer
        # dropped and not yet told on the bus: (contract id, tick type) -> [[first, last], ...]
        self._lost: dict[tuple[int, str], list[list[int]]] = {}
        self._warned = False  # one overflow warning per outage
        self._names: dict[Key, tuple[str, str, str]] = {}
        # the window's open packs: a stream's first sequence, then its ticks' records
        self._open: dict[Key, list] = {}
        self._ordinal = 0  # the ticks' order across streams, carried in their records
        self._wake = asyncio.Event()
        self.sender = Sender(self.buffer, self._wake)
        self._drained = asyncio.Event()  # set whenever the sender finds nothing left to send
        self._task: asyncio.Task | None = None
        self._clock: asyncio.TimerHandle | None = None
        self._gather: asyncio.TimerHandle | None = None
        link.on_lost.append(self._wake.set)
        self._event("source_started", f"source {server_id} started")

    # -- the hub's side: never awaits ----------------------------------------------------

    def tick(self, key: Key, entry: EncodedTick) -> None:
        """Into its stream's open pack (a full one goes to the buffer at once)."""
        pack = self._open.get(key)
        if pack is None:
            pack = self._open[key] = [entry.sequence]
            if self._gather is None:  # the window's first tick: it closes in GATHER_SECONDS
                loop = asyncio.get_running_loop()
                self._gather = loop.call_later(GATHER_SECONDS, self._gathered)
        self._ordinal += 1
        pack.append(wire.tick_record(entry, self._ordinal))
        if len(pack) > wire.PACK_TICKS:
            del self._open[key]
            self._push(key, pack, end=not self._open)  # the only open pack: ends the window
            if not self._open:
                self._wake.set()

    def stream_opened(self, contract: ContractInfo, tick_type: TickType, last: int) -> None:
        self._append(self.events.stream_opened(contract, tick_type, last))

    def stream_closed(self, key: Key, last: int) -> None:
        self._append(self.events.stream_closed(key, last))

    def stream_event(self, event: SourceEvent, last: int) -> None:
        self._append(self.events.stream_event(event, last))

    def connection_changed(
        self, status: str, message: str, details: dict | None, held: list[tuple]
    ) -> None:
        self._append(self.events.connection(status, message, details, held))

    def _event(self, status: str, message: str, details: dict | None = None) -> None:
        self._append(self.events.make(status, message, details))

    def _append(self, message: Message) -> None:
        """An event, after the ticks before it (it ends their window)."""
        self._close_window()
        self.buffer.append(message)
        self._soon()

    def _close_window(self) -> None:
        """Every open pack into the buffer, in the order of their first ticks; the last one
        ends the window."""
        if self._open:
            packs, self._open = self._open, {}
            last = len(packs) - 1
            for n, (key, pack) in enumerate(packs.items()):
                self._push(key, pack, end=n == last)

    def _push(self, key: Key, pack: list, end: bool) -> None:
        named = self._names.get(key)
        if named is None:  # the subject and message id prefix of a stream, made once
            named = self._names[key] = (
                wire.tick_subject(*key),
                wire.message_id(self.server_id, key[0], key[1], 0)[:-1],
                key[1].value,
            )
        first, records = pack[0], pack[1:]
        count = len(records)
        while self.ticks + count > self.capacity and self._drop_oldest():
            pass
        body = wire.pack_body(self.server_id, records, end)
        self.buffer.append((named[0], body, f"{named[1]}{first}", key[0], named[2], first, count))
        self.ticks += count
        self._soon()

    def _soon(self) -> None:
        if self._gather is None:  # send it and what follows soon
            loop = asyncio.get_running_loop()
            self._gather = loop.call_later(GATHER_SECONDS, self._gathered)
        elif len(self.buffer) - self.sender.sent >= BATCH:  # a batch is there already: now
            self._wake.set()

    def _gathered(self) -> None:
        self._close_window()  # while `_gather` is set: its packs start no timer of their own
        self._gather = None
        self._wake.set()

    def _drop_oldest(self) -> bool:
        """Drop the oldest pack not sent yet (events before it stay: a consumer needs
        `stream_opened`; one on its way may be stored already, so it is never named lost:
        the buffer exceeds its capacity by at most what is in flight). False if none."""
        buffer = self.buffer
        at = next((i for i in range(self.sender.sent, len(buffer)) if is_tick(buffer[i])), None)
        if at is None:
            return False
        _, _, _, contract_id, tick_type, first, count = buffer[at]
        del buffer[at]
        self.ticks -= count
        self.dropped += count
        spans = self._lost.setdefault((contract_id, tick_type), [])
        if spans and spans[-1][1] + 1 == first:  # a stream's packs go oldest first
            spans[-1][1] = first + count - 1
        else:
            spans.append([first, first + count - 1])
        if not self._warned:
            self._warned = True
            log.warning(
                "bus: buffer full (%d ticks) while NATS at %s is away or slow: dropping the "
                "oldest not yet sent (counted in /health bus.dropped; consumers get a "
                "bus_overflow event)",
                self.capacity,
                self.link.url,
            )

    # -- the sender ----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ibstream-bus-publisher")

    async def _run(self) -> None:
        while True:
            await self.link.connected.wait()
            nc, js = self.link.nc, self.link.js
            if nc is None or js is None:  # between connections
                await asyncio.sleep(RETRY_PAUSE)
                continue
            try:
                await self._session(nc, js)
            except asyncio.CancelledError:
                raise
            except TimeoutError:  # no ack, or a send that never finished: a wedged connection
                log.warning(
                    "bus: JetStream acknowledged nothing for %g s; reconnecting to NATS and "
                    "resending from the oldest unacknowledged message",
                    ACK_TIMEOUT,
                )
                await self.link.restart(nc)
            except Exception as exc:  # the connection ended or refused: resend from the head
                log.debug("bus: publishing stopped (%r); resending from the oldest unacked", exc)
                self.link.notice_closed(nc)
            self.sender.reset()
            if self.link.connected.is_set():  # refused (no stream leader ...), not gone
                await asyncio.sleep(RETRY_PAUSE)

    async def _session(self, nc: NATS, js: JetStreamContext) -> None:
        """Send and take acks until the connection ends; one event wakes it (a new message,
        an ack, a batch due, the connection lost, the ack clock): a pass makes no task."""
        lost, wake, sender = self.link.lost, self._wake, self.sender
        self._clock = asyncio.get_running_loop().call_later(ACK_TIMEOUT / 4, self._tick_clock)
        try:
            while not lost.is_set():
                if self._lost and not sender.batches:  # before the ticks that survived
                    at = next((i for i, m in enumerate(self.buffer) if is_tick(m)), 0)
                    self.buffer.insert(at, self.events.overflow(self._lost, self.dropped))
                    self._lost = {}
                wake.clear()
                async with asyncio.timeout(ACK_TIMEOUT):  # a send blocked on a wedged socket
                    await sender.send(nc, js)
                items, ticks = sender.take_acked()  # raises a refusal, a lost ack
                self.published += items
                self.ticks -= ticks
                if not self.buffer:
                    self._warned = False  # caught up: a later overflow is a new one
                    self._drained.set()
                if sender.sent < len(self.buffer) and sender.awaited() < BATCHES:
                    continue  # more to send at once
                await wake.wait()
        finally:
            self._clock.cancel()

    def _tick_clock(self) -> None:
        """Wake the sender now and then, so an ack that never comes is noticed."""
        if self.sender.batches:
            self._wake.set()
        self._clock = asyncio.get_running_loop().call_later(ACK_TIMEOUT / 4, self._tick_clock)

    def status(self) -> dict:
        return {
            **self.link.status(),
            "server_id": self.server_id,
            "published": self.published,
            "buffered": self.ticks,
            "buffered_messages": len(self.buffer),
            "in_flight": self.sender.sent,
            "buffer_capacity": self.capacity,
            "dropped": self.dropped,
        }

    async def stop(self, timeout: float = 5.0) -> None:
        """Publish what is buffered (up to `timeout` s while connected), then stop."""
        self._close_window()
        if self.buffer and self.link.connected.is_set():
            self._drained.clear()
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._drained.wait()
        if self.buffer:
            log.warning(
                "bus: %d tick(s) in %d message(s) not published at shutdown",
                self.ticks,
                len(self.buffer),
            )
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.sender.reset()
        if self._gather is not None:
            self._gather.cancel()
