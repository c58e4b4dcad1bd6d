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
import logging
from collections import deque
from typing import TYPE_CHECKING

from nats.js import JetStreamContext

from ibstream.bus import wire
from ibstream.bus.events import EventMaker, Message
from ibstream.model import ContractInfo, TickType
from ibstream.protocol.encode import EncodedTick

if TYPE_CHECKING:
    from ibstream.bus.link import BusLink
    from ibstream.ib.source import SourceEvent

log = logging.getLogger(__name__)
WINDOW = 1_000  # messages in flight at most (awaiting their acks)
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
        self.inflight: deque[asyncio.Future] = deque()  # futures of buffer[:len(inflight)]
        self.published = 0  # acknowledged by JetStream
        self.dropped = 0  # gone from a full buffer
        self._lost: dict[Key, list[int]] = {}  # dropped, not yet told: stream -> [first, last]
        self._warned = False  # one overflow warning per outage
        self._subjects: dict[Key, str] = {}
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set whenever the sender finds nothing left to send
        self._task: asyncio.Task | None = None
        self._event("source_started", f"source {server_id} started")

    # -- the hub's side: never awaits ----------------------------------------------------

    def tick(self, key: Key, entry: EncodedTick) -> None:
        subject = self._subjects.get(key)
        if subject is None:
            subject = self._subjects[key] = wire.tick_subject(*key)
        msg_id = wire.message_id(self.server_id, key[0], key[1], entry.sequence)
        body = wire.tick_body(self.server_id, entry)
        self._append(Message(subject, body, {wire.MSG_ID: msg_id}, key, entry.sequence))

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
        gone = self.buffer.popleft()
        if self.inflight:  # its ack no longer matters
            self.inflight.popleft().cancel()
        self.dropped += 1
        if gone.key is not None:
            span = self._lost.setdefault(gone.key, [gone.sequence, gone.sequence])
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
            js = self.link.js
            if js is None:  # between connections
                await asyncio.sleep(RETRY_PAUSE)
                continue
            try:
                await self._session(js)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection ended or refused: resend from the head
                log.debug("bus: publishing stopped (%r); resending from the oldest unacked", exc)
            self._reset()
            if self.link.connected.is_set():  # refused (no stream leader ...), not gone
                await asyncio.sleep(RETRY_PAUSE)

    def _reset(self) -> None:
        for future in self.inflight:
            future.cancel()
        self.inflight.clear()

    async def _session(self, js: JetStreamContext) -> None:
        lost = asyncio.ensure_future(self.link.lost.wait())
        try:
            while not lost.done():
                if self._lost and not self.inflight:
                    self.buffer.appendleft(self.events.overflow(self._lost, self.dropped))
                    self._lost = {}
                await self._fill(js)
                if not self.inflight:
                    self._warned = False  # caught up: a later overflow is a new one
                    self._drained.set()
                    self._wake.clear()
                    woken = asyncio.ensure_future(self._wake.wait())
                    await asyncio.wait([woken, lost], return_when=asyncio.FIRST_COMPLETED)
                    woken.cancel()
                    continue
                oldest = self.inflight[0]
                done, _ = await asyncio.wait(
                    [oldest, lost], timeout=ACK_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
                )
                if oldest in done:
                    self._take_acked()
                elif not lost.done():
                    raise TimeoutError(f"no ack within {ACK_TIMEOUT} s")
        finally:
            lost.cancel()

    async def _fill(self, js: JetStreamContext) -> None:
        buffer, inflight = self.buffer, self.inflight
        while len(inflight) < WINDOW and len(inflight) < len(buffer):
            msg = buffer[len(inflight)]
            inflight.append(await js.publish_async(msg.subject, msg.body, headers=msg.headers))

    def _take_acked(self) -> None:
        """Take acknowledged messages off the head; a refused one raises (resend from it)."""
        buffer, inflight = self.buffer, self.inflight
        while inflight and inflight[0].done():
            future = inflight[0]
            future.result()  # raises what JetStream refused with
            inflight.popleft()
            buffer.popleft()
            self.published += 1

    def status(self) -> dict:
        return {
            **self.link.status(),
            "server_id": self.server_id,
            "published": self.published,
            "buffered": len(self.buffer),
            "in_flight": len(self.inflight),
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
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._reset()
