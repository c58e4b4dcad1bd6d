"""The publisher's sending side: the buffer's head onto one NATS connection, acknowledged.

Every message (an event, or a pack of one stream's ticks) goes out at once as a plain
publish (no wait, no reply to handle per message), and now and then one of them carries a
reply for JetStream's ack: when a batch reaches `BATCH` messages, or `CONFIRM_SECONDS` after
its first one (then its last message is sent again with a reply: JetStream drops the copy
by its message id and still acks it). A message costs a publish, a batch one ack. The ack
stands for the whole batch because every message but a session's first names its
predecessor (`Nats-Expected-Last-Msg-Id`): JetStream stores a message only right after the
one before it, so one lost on the way (a cluster electing a new stream leader drops
publishes silently) makes every later one refused, its batch's ack included, and nothing is
stored out of order. A refused or missing ack (or a new connection) sends everything
unacknowledged again from the oldest, in order; the copies JetStream already holds are
dropped by their message ids (checked before the expectation).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from typing import TYPE_CHECKING

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from ibstream.bus import wire

if TYPE_CHECKING:
    from ibstream.bus.events import Message

BATCH = 256  # messages one ack stands for at most
BATCHES = 8  # acks awaited at most; past it sending waits
CONFIRM_SECONDS = 0.005  # a batch is confirmed this long after its first message at the latest
ACK_TIMEOUT = 5.0  # seconds without an awaited ack: send again from the oldest
EXPECTED = "Nats-Expected-Last-Msg-Id"  # JetStream stores it only right after that message


class Sender:
    """The batches in flight of `buffer`'s first `sent` messages, oldest first: each a
    [count, ack future or None while open, time of its first send, its last message's
    headers]."""

    def __init__(self, buffer: deque[Message], wake: asyncio.Event):
        self.buffer = buffer
        self.wake = wake
        self.batches: deque[list] = deque()
        self.sent = 0
        self._previous: str | None = None  # the last message id sent in this session
        self._due: asyncio.TimerHandle | None = None  # the open batch's confirm time

    async def send(self, nc: NATS, js: JetStreamContext) -> None:
        """Send what is not sent yet (a batch at a time, so the server's clients are served
        between batches), and confirm the open batch when it is full or due."""
        buffer, batches = self.buffer, self.batches
        while self.sent < len(buffer) and self.awaited() < BATCHES:
            for msg in list(itertools.islice(buffer, self.sent, self.sent + BATCH)):
                batch = self._open()
                batch[0] += 1
                self.sent += 1
                headers = self._headers(msg)  # (subject, body, message id, ...)
                batch[3] = headers
                if batch[0] >= BATCH or time.monotonic() - batch[2] >= CONFIRM_SECONDS:
                    await self._confirm(js, batch, msg)
                else:
                    await nc.publish(msg[0], msg[1], headers=headers)
            if self.sent < len(buffer):
                await asyncio.sleep(0)
        if batches and batches[-1][1] is None:
            if time.monotonic() - batches[-1][2] >= CONFIRM_SECONDS:
                await self._confirm(js, batches[-1], buffer[self.sent - 1])  # a copy: acked
            elif self._due is None:
                loop = asyncio.get_running_loop()
                self._due = loop.call_later(CONFIRM_SECONDS, self._confirm_due)

    def _open(self) -> list:
        batches = self.batches
        if not batches or batches[-1][1] is not None:
            batches.append([0, None, time.monotonic(), None])
        return batches[-1]

    def _headers(self, msg: Message) -> dict[str, str]:
        """The message's id and, but for a session's first, its predecessor's."""
        headers = {wire.MSG_ID: msg[2]}
        if self._previous is not None:
            headers[EXPECTED] = self._previous
        self._previous = msg[2]
        return headers

    async def _confirm(self, js: JetStreamContext, batch: list, msg: Message) -> None:
        # the batch's last message (or its copy: the same id and expectation) with a reply
        ack = await js.publish_async(msg[0], msg[1], headers=batch[3])
        ack.add_done_callback(self._acked)
        batch[1], batch[2] = ack, time.monotonic()

    def _confirm_due(self) -> None:
        self._due = None
        self.wake.set()

    def _acked(self, _future: asyncio.Future) -> None:
        self.wake.set()

    def awaited(self) -> int:
        return sum(1 for b in self.batches if b[1] is not None)

    def take_acked(self) -> tuple[int, int]:
        """Take acknowledged batches off the buffer's head; how many ticks and events, and
        how many ticks. A refused batch raises what JetStream said (the caller sends again
        from it); so does an ack awaited past ACK_TIMEOUT."""
        buffer, batches, items, ticks = self.buffer, self.batches, 0, 0
        while batches and batches[0][1] is not None and batches[0][1].done():
            count, future, *_ = batches.popleft()
            future.result()
            for _ in range(count):
                n = buffer.popleft()[6]
                items += n or 1
                ticks += n
            self.sent -= count
        if batches and batches[0][1] is not None:
            if batches[0][2] < time.monotonic() - ACK_TIMEOUT:
                raise TimeoutError(f"no ack from JetStream within {ACK_TIMEOUT} s")
        return items, ticks

    def reset(self) -> None:
        """Nothing is in flight any more (the connection ended): all is sent again."""
        for _, future, *_ in self.batches:
            if future is not None:
                future.cancel()
        self.batches.clear()
        self.sent = 0
        self._previous = None  # the next session's first message expects nothing
        if self._due is not None:
            self._due.cancel()
            self._due = None
