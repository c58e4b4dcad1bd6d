"""Every numbered tick and source event onto JetStream, in order, acknowledged.

The hub hands each tick over (`tick`) as the `EncodedTick` it already made, without
awaiting: the publisher appends the message to a bounded buffer and wakes its sender. The
sender keeps up to `WINDOW` messages in flight (`publish_async`, one ack each) and takes a
message off the buffer only when JetStream acknowledged it, so after a lost connection or a
refused publish it sends again from the first unacknowledged message, with the same message
id: JetStream drops the copies it already holds.

While NATS is away the buffer fills; past `capacity` the oldest message goes, counted, with
one warning per outage, and an event (`bus_overflow`) goes on the bus ahead of the
surviving messages naming the ranges lost per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from typing import TYPE_CHECKING

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from ibstream.bus import wire
from ibstream.bus.events import EventMaker, Message
from ibstream.model import ContractInfo, TickType
from ibstream.protocol.encode import EncodedTick

if TYPE_CHECKING:
    from ibstream.bus.link import BusLink
    from ibstream.ib.source import SourceEvent

log = logging.getLogger(__name__)
BATCH = 256  # messages per acknowledged batch
BATCHES = 8  # batches in flight at most (awaiting their acks)
ACK_TIMEOUT = 5.0  # seconds without the oldest ack: send again from it
RETRY_PAUSE = 0.2  # after a refused publish (no stream leader yet ...), before sending again
Key = tuple[int, TickType]


class BusPublisher:
    """The hub's `bus` member: buffers, publishes in order, re-sends what was not acked."""

    def __init__(self, link: BusLink, server_id: str, *, capacity: int = 200_000):
        if capacity < 1:
            raise ValueError(f"the bus buffer holds at least 1 message, not {capacity}")
        self.link = link
        self.server_id = server_id
        self.capacity = capacity
        self.events = EventMaker(server_id)
        self.buffer: deque[Message] = deque()
        # [count, ack future] of each batch in flight: the first _sent messages of buffer
        self.inflight: deque[list] = deque()
        self._sent = 0
        self.published = 0  # acknowledged by JetStream
        self.dropped = 0  # gone from a full buffer
        self._lost: dict[
            tuple[int, str], list[int]
        ] = {}  # dropped, not yet told: stream -> [first, last]
        self._warned = False  # one overflow warning per outage
        self._names: dict[Key, tuple[str, str, str]] = {}
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set whenever the sender finds nothing left to send
        self._task: asyncio.Task | None = None
        self._event("source_started", f"source {server_id} started")

    # -- the hub's side: never awaits ----------------------------------------------------

    def tick(self, key: Key, entry: EncodedTick) -> None:
        named = self._names.get(key)
        if named is None:  # the subject and message id prefix of a stream, made once
            named = self._names[key] = (
                wire.tick_subject(*key),
                wire.message_id(self.server_id, key[0], key[1], 0)[:-1],
                key[1].value,
            )
        sequence = entry.sequence
        body = wire.tick_body(self.server_id, entry)
        self._append(Message(named[0], body, f"{named[1]}{sequence}", key[0], named[2], sequence))

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
        buffer = self.buffer
        if len(buffer) >= self.capacity:
            self._drop_oldest()
        buffer.append(message)
        self._wake.set()

    def _drop_oldest(self) -> None:
        """Drop the oldest tick (events before it stay: a consumer needs `stream_opened`)."""
        buffer, inflight = self.buffer, self.inflight
        at = next((i for i, m in enumerate(buffer) if m.is_tick), 0)
        gone = buffer[at]
        del buffer[at]
        if at < self._sent:  # in flight: its batch counts one message less
            self._sent -= 1
            for batch in inflight:
                if at < batch[0]:
                    batch[0] -= 1
                    break
                at -= batch[0]
        self.dropped += 1
        if gone.is_tick:
            stream = (gone.contract_id, gone.tick_type)
            span = self._lost.setdefault(stream, [gone.sequence, gone.sequence])
            span[0], span[1] = min(span[0], gone.sequence), max(span[1], gone.sequence)
        if not self._warned:
            self._warned = True
            log.warning(
                "bus: buffer full (%d messages) while NATS at %s is away or slow: dropping the "
                "oldest (counted in /health bus.dropped; consumers get a bus_overflow event)",
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
            except Exception as exc:  # the connection ended or refused: resend from the head
                log.debug("bus: publishing stopped (%r); resending from the oldest unacked", exc)
            self._reset()
            if self.link.connected.is_set():  # refused (no stream leader ...), not gone
                await asyncio.sleep(RETRY_PAUSE)

    def _reset(self) -> None:
        for _, future in self.inflight:
            if future is not None:
                future.cancel()
        self.inflight.clear()
        self._sent = 0

    async def _session(self, nc: NATS, js: JetStreamContext) -> None:
        lost = asyncio.ensure_future(self.link.lost.wait())
        try:
            while not lost.done():
                if self._lost and not self.inflight:  # before the ticks that survived
                    at = next((i for i, m in enumerate(self.buffer) if m.is_tick), 0)
                    self.buffer.insert(at, self.events.overflow(self._lost, self.dropped))
                    self._lost = {}
                await self._fill(nc, js)
                if not self.inflight:
                    self._warned = False  # caught up: a later overflow is a new one
                    self._drained.set()
                    self._wake.clear()
                    woken = asyncio.ensure_future(self._wake.wait())
                    await asyncio.wait([woken, lost], return_when=asyncio.FIRST_COMPLETED)
                    woken.cancel()
                    continue
                oldest = self.inflight[0][1]
                done, _ = await asyncio.wait(
                    [oldest, lost], timeout=ACK_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
                )
                if oldest in done:
                    self._take_acked()
                elif not lost.done():
                    raise TimeoutError(f"no ack within {ACK_TIMEOUT} s")
        finally:
            lost.cancel()

    async def _fill(self, nc: NATS, js: JetStreamContext) -> None:
        """Send batches of what is not in flight yet: every message but a batch's last one
        as a plain publish, the last with a reply for JetStream's ack. One connection keeps
        them in order and the stream stores them in order, so that ack stands for the whole
        batch (one ack to handle per batch, not per tick); a refused or missing ack sends
        the batch again, whose copies JetStream drops by their message ids."""
        buffer, inflight = self.buffer, self.inflight
        while len(inflight) < BATCHES and self._sent < len(buffer):
            batch = list(itertools.islice(buffer, self._sent, self._sent + BATCH))
            record: list = [len(batch), None]
            inflight.append(record)
            self._sent += len(batch)
            for msg in batch[:-1]:
                await nc.publish(msg.subject, msg.body, headers={wire.MSG_ID: msg.msg_id})
            last = batch[-1]
            record[1] = await js.publish_async(
                last.subject, last.body, headers={wire.MSG_ID: last.msg_id}
            )
            await asyncio.sleep(0)  # a batch at a time: the server's clients are served between

    def _take_acked(self) -> None:
        """Take acknowledged batches off the head; a refused one raises (resend from it)."""
        buffer, inflight = self.buffer, self.inflight
        while inflight and inflight[0][1] is not None and inflight[0][1].done():
            count, future = inflight[0]
            future.result()  # raises what JetStream refused with
            inflight.popleft()
            for _ in range(count):
                buffer.popleft()
            self._sent -= count
            self.published += count

    def status(self) -> dict:
        return {
            **self.link.status(),
            "server_id": self.server_id,
            "published": self.published,
            "buffered": len(self.buffer),
            "in_flight": self._sent,
            "buffer_capacity": self.capacity,
            "dropped": self.dropped,
        }

    async def stop(self, timeout: float = 5.0) -> None:
        """Publish what is buffered (up to `timeout` s while connected), then stop."""
        if self.buffer and self.link.connected.is_set():
            self._drained.clear()
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._drained.wait()
        if self.buffer:
            log.warning("bus: %d message(s) not published at shutdown", len(self.buffer))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._reset()
