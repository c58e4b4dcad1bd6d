"""A subscriber is one client connection (a WebSocket or an SSE response) and its streams.

It owns one bounded queue of ready-to-send messages. The hub only ever appends without
waiting; when a client stops reading and the queue fills, the subscriber is closed with
SLOW_CONSUMER instead of growing memory or stalling other clients. The bound counts ticks
(a batched `ticks` message all it holds), so batching cannot hide a client falling behind.
Replayed ticks (a resume) have their own bound, `replay_size`: a replay that would not fit
sends its newest ticks and reports the older ones as a `gap` (`replay_limit`). What is
queued for a stream the client unsubscribes is dropped, so no pattern of requests makes the
server hold more than `queue_size` + `replay_size` ticks for one connection.
Batched streams wait in its `Batcher` (see `batching`) until their interval is up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ibstream.errors import ErrorCode, StreamError
from ibstream.model import TickType
from ibstream.protocol.changes import Changes
from ibstream.protocol.encode import Outgoing, error_message, message
from ibstream.protocol.times import iso_ns
from ibstream.server.batching import Batcher
from ibstream.server.hub import Hub
from ibstream.server.replay import Replay, plan_replay
from ibstream.server.stream import StreamHandle

if TYPE_CHECKING:
    from ibstream.protocol.validate import Subscribe

log = logging.getLogger(__name__)


class SubscriberClosed(Exception):
    """Raised by `Subscriber.get` once the subscriber is closed and its queue drained."""


def subscribed_message(
    handles: list[StreamHandle], spec: Subscribe, request_id: object = None
) -> Outgoing:
    """The `subscribed` reply: contract, streams (id, tick type, start_sequence), the config in
    force and the server id (sequences are only comparable between replies with the same id).

    `start_sequence` is where the stream continues from: the stream's last sequence when it
    joined, or the resume position after a valid resume. Build it after `prepare_replay`.
    """
    resume = {t.value: n for t, n in spec.resume_from.items()} if spec.resume_from else None
    config = {
        "limit": spec.limit,
        "timeout_seconds": spec.timeout,
        "resume_from": resume,
        "batch_ms": handles[0].batch_ms,
        "start": None if spec.start is None else iso_ns(spec.start),
        "format": "arrow" if spec.format == "arrow" else None,
    }
    streams = [
        {
            "stream_id": h.stream_id,
            "tick_type": h.tick_type.value,
            "start_sequence": h.start_sequence,
        }
        for h in handles
    ]
    data = {
        "contract": handles[0].contract.to_dict(),
        "streams": streams,
        "config": {k: v for k, v in config.items() if v is not None} or None,
        "server_id": handles[0].owner.hub.server_id,
    }
    return message("subscribed", data, request_id=request_id)


class Subscriber:
    """A client connection's streams and outgoing queue."""

    def __init__(
        self,
        hub: Hub,
        *,
        client: str = "",
        max_streams: int = 20,
        queue_size: int = 10_000,
        replay_size: int = 20_000,
    ):
        self.hub = hub
        self.client = client
        self.max_streams = max_streams
        self.queue_size = queue_size
        self.replay_size = replay_size
        self.streams: dict[str, StreamHandle] = {}
        self._queue: deque[Outgoing] = deque()
        # Live ticks queued (a batch counts all it holds; other messages one each), bounded
        # by queue_size; replayed ticks apart, bounded by replay_size (see prepare_replay).
        self._load = 0
        self._replay_load = 0
        self.changes = Changes()  # notified when streams are attached or detached
        self.batcher = Batcher(self.put)
        self.sent_sequences: dict[str, int] = {}  # stream id -> last tick sequence handed out
        self._wakeup = asyncio.Event()
        self._room: asyncio.Event | None = None  # set when the queue is half empty again
        self.closed: StreamError | None = None
        self._closing = False
        self.sent = 0
        # Called once when this client is cut off as a slow consumer: its transport frees
        # the connection slot and stats entry at once, not when the last frame got through.
        self.on_slow: Callable[[], None] | None = None

    async def subscribe(
        self,
        spec: str | int,
        tick_types: list[TickType],
        *,
        limit: int | None = None,
        timeout: float | None = None,
        batch_ms: float | None = None,
        start_ns: int | None = None,
        frame_format: str = "json",
    ) -> list[StreamHandle]:
        """Resolve the contract and attach one stream per tick type (see `replay` to resume).
        `frame_format` "arrow" needs a hub that builds Arrow frames (`arrow_frames`)."""
        if frame_format != "json" and not getattr(self.hub, "arrow_frames", False):
            raise StreamError(
                ErrorCode.INVALID_MESSAGE,
                f"format {frame_format!r} is served by replay servers (`ibstream replay`) only: "
                "this server streams live ticks as JSON; leave format out",
                details={"field": "data.config.format", "expected": "json", "got": frame_format},
            )
        if self._closing:
            raise StreamError(ErrorCode.CONNECTION_ERROR, "this connection is closing")
        if len(self.streams) + len(tick_types) > self.max_streams:
            raise StreamError(
                ErrorCode.RATE_LIMIT_EXCEEDED,
                f"at most {self.max_streams} streams per connection; "
                f"{len(self.streams)} open, {len(tick_types)} requested: unsubscribe first",
                details={"max_streams": self.max_streams, "open_streams": len(self.streams)},
            )
        contract = await self.hub.resolve(spec)
        prepare = getattr(self.hub, "prepare", None)  # a bus edge asks its source to hold them
        if prepare is not None:
            await prepare(contract, tick_types)
        if self._closing:  # closed while resolving: attaching now would leak upstream streams
            raise StreamError(
                ErrorCode.CONNECTION_ERROR, "this connection closed while subscribing"
            )
        handles = []
        try:
            for tick_type in tick_types:
                handle = StreamHandle(
                    self,
                    contract,
                    tick_type,
                    limit=limit,
                    timeout=timeout,
                    batch_ms=batch_ms,
                    start_ns=start_ns,
                    frame_format=frame_format,
                )
                self.streams[handle.stream_id] = handle
                handles.append(handle)
            for handle in handles:
                self.hub.attach(handle)
                handle.start_sequence = handle.last_sequence = self.hub.last_sequence(
                    contract.contract_id, handle.tick_type
                )
                handle.start_timeout()
        except BaseException:
            self.abandon(handles)
            raise
        self.changes.notify()
        return handles

    def prepare_replay(
        self, handles: list[StreamHandle], positions: dict[TickType, int] | None
    ) -> Replay:
        """Move each resumed stream's start to its resume position (when the hub knows it)
        and collect what to queue; call it right after `subscribe` returns (no await in
        between, so no live tick can come first), before building `subscribed`.

        The buffered ticks of all streams are merged in arrival order; when they would take
        the replayed ticks queued past `replay_size`, only the newest that fit are replayed
        and each stream cut short gets a `replay_limit` gap for its oldest ones."""
        room = max(0, self.replay_size - self._replay_load)
        return plan_replay(self.hub, handles, positions, room, self.replay_size)

    def start(self, handles: list[StreamHandle], plan: Replay) -> None:
        """After `subscribed` is queued: the replay (gap infos, then buffered ticks), and an
        `ib_disconnected` info on each stream when IB is down right now (the stream is
        requested from IB as soon as the source has reconnected)."""
        self._queue_replay(plan)
        if not self.hub.source.available:
            for handle in handles:
                if handle.active:
                    handle.notify(
                        "ib_disconnected",
                        "IB is not connected right now; the server keeps reconnecting and this "
                        "stream starts as soon as IB is back",
                    )

    def replay(self, handles: list[StreamHandle], positions: dict[TickType, int]) -> None:
        """`prepare_replay` and queue it at once (when nothing has to go in between)."""
        self._queue_replay(self.prepare_replay(handles, positions))

    def _queue_replay(self, plan: Replay) -> None:
        for handle, gap in plan.gaps:
            handle.notify("gap", gap.pop("message"), gap)
        for _, _, entry, handle in plan.entries:
            handle.deliver(entry, replayed=True)
        self.batcher.flush()  # a replayed backlog goes out at once, batched or not

    async def room(self) -> None:
        """Wait until the live queue is at most half full: a source that can wait (a
        recording's replay) never overflows it, however slowly its client reads."""
        while self._load > self.queue_size // 2 and not self._closing:
            if self._room is None:
                self._room = asyncio.Event()
            await self._room.wait()

    def _roomy(self) -> None:
        if self._room is not None and (self._load <= self.queue_size // 2 or self._closing):
            self._room.set()
            self._room = None

    def unsubscribe(self, stream_id: str) -> dict:
        """Detach one stream, drop what is queued for it, and return its final counters
        (the ticks the client gets)."""
        handle = self.streams.get(stream_id)
        if handle is None:
            raise StreamError(
                ErrorCode.STREAM_NOT_FOUND,
                f"no open stream {stream_id!r} on this connection",
                details={"stream_id": stream_id, "open_streams": list(self.streams)},
            )
        self._drop_queued(handle)
        self._detach(handle)
        return {"stream_id": stream_id, **handle.summary("unsubscribed")}

    def unsubscribe_all(self) -> list[str]:
        handles = list(self.streams.values())
        for handle in handles:
            self._drop_queued(handle)
            self._detach(handle)
        return [handle.stream_id for handle in handles]

    def _drop_queued(self, handle: StreamHandle) -> None:
        """Forget the messages queued for a stream the client is leaving: its own, and the
        `ticks` frames none of whose other streams stays open (a frame shared with an open
        stream goes out whole). Its counters then say what the client gets."""
        stream_id = handle.stream_id
        dropped = self.batcher.discard(stream_id)
        last = self.sent_sequences.get(stream_id, handle.start_sequence)
        kept: deque[Outgoing] = deque()
        for item in self._queue:
            spans = item.spans
            if item.stream_id != stream_id and (spans is None or stream_id not in spans):
                kept.append(item)
            elif spans is not None and any(s != stream_id and s in self.streams for s in spans):
                last = spans[stream_id][1]  # shared with an open stream: it goes whole
                kept.append(item)
            else:
                self._unload(item)
                if spans is not None:
                    dropped += spans[stream_id][1] - spans[stream_id][0] + 1
                elif item.sequence is not None:
                    dropped += 1
        self._queue = kept
        self._roomy()
        handle.count -= dropped
        handle.last_sequence = last

    def complete(self, handle: StreamHandle, reason: str) -> None:
        """End a stream from the server side and tell the client why."""
        if not handle.active:
            return
        handle.flush()
        self._detach(handle)
        self.put(
            message("complete", handle.summary(reason), stream_id=handle.stream_id), force=True
        )

    def abandon(self, handles: list[StreamHandle], told: bool = False) -> None:
        """Undo a subscribe that failed part-way: detach its streams (with `complete`
        reason error when the client was `told` their ids) and cancel at once any upstream
        left without a member, instead of keeping it for the grace period."""
        for handle in handles:
            if told:
                self.complete(handle, "error")
            else:
                self._detach(handle)
            self.hub.drop_unused(handle)

    def _detach(self, handle: StreamHandle) -> None:
        handle.active = False
        self.sent_sequences.pop(handle.stream_id, None)
        self.batcher.discard(handle.stream_id)
        handle.stop_timeout()
        self.streams.pop(handle.stream_id, None)
        self.hub.detach(handle)
        self.changes.notify()

    def put(self, item: Outgoing, *, force: bool = False) -> None:
        """Queue a message without waiting; overflow closes the subscriber (SLOW_CONSUMER)."""
        if self.closed is not None:
            return
        if item.replayed:  # bounded by prepare_replay
            self._replay_load += item.ticks
        else:
            if self._load >= self.queue_size and not force:
                self._overflow()
                return
            self._load += item.ticks
        self._queue.append(item)
        self._wakeup.set()

    def _unload(self, item: Outgoing) -> None:
        if item.replayed:
            self._replay_load -= item.ticks
        else:
            self._load -= item.ticks

    def _overflow(self) -> None:
        error = StreamError(
            ErrorCode.SLOW_CONSUMER,
            f"client fell {self.queue_size} ticks behind and was disconnected; "
            "read faster, or resubscribe with resume_from = the last sequences you received",
            details=self.positions(),
        )
        log.warning("slow consumer %s disconnected", self.client)
        self._queue.clear()
        self._load = self._replay_load = 0
        self._queue.append(error_message(error))
        self.close(error)

    def positions(self) -> dict:
        """Where each stream stands (the last sequence sent, else where it joined or resumed):
        `streams` lists them all; `last_sent` ({tick_type: n}, a ready `resume_from`) is
        there when they are of one contract (per tick type the lowest, so nothing is lost)."""
        streams = [
            {
                "stream_id": h.stream_id,
                "contract_id": h.contract.contract_id,
                "tick_type": h.tick_type.value,
                "last_sent": self.sent_sequences.get(h.stream_id, h.start_sequence),
            }
            for h in self.streams.values()
        ]
        details: dict = {"streams": streams}
        if len({s["contract_id"] for s in streams}) <= 1:
            last: dict[str, int] = {}
            for s in streams:
                last[s["tick_type"]] = min(last.get(s["tick_type"], s["last_sent"]), s["last_sent"])
            details["last_sent"] = last
        return details

    def close(self, error: StreamError | None = None) -> None:
        """Detach every stream; `get` drains what is queued, then raises SubscriberClosed."""
        if self._closing:
            return
        self._closing = True
        for handle in list(self.streams.values()):
            self._detach(handle)
        self.batcher.close()
        self.closed = error or StreamError(ErrorCode.CONNECTION_ERROR, "closed")
        self._wakeup.set()
        self._roomy()
        if self.closed.code == ErrorCode.SLOW_CONSUMER and self.on_slow is not None:
            self.on_slow()

    def close_streams(self, reason: str) -> None:
        """End every open stream with `complete` (e.g. server shutdown)."""
        for handle in list(self.streams.values()):
            self.complete(handle, reason)

    async def get(self) -> Outgoing:
        while not self._queue:
            if self._closing:
                raise SubscriberClosed
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._take()

    def get_nowait(self) -> Outgoing | None:
        return self._take() if self._queue else None

    def take(self, limit: int) -> list[Outgoing]:
        """Up to `limit` queued messages at once, without waiting."""
        queue = self._queue
        items = [queue.popleft() for _ in range(min(limit, len(queue)))]
        for item in items:
            self._taken(item)
        return items

    def _take(self) -> Outgoing:
        item = self._queue.popleft()
        self._taken(item)
        return item

    def _taken(self, item: Outgoing) -> None:
        """Count a message out of the queue and note the positions it carries."""
        self.sent += 1
        self._unload(item)
        if self._room is not None:
            self._roomy()
        if item.stream_id in self.streams:
            self.sent_sequences[item.stream_id] = item.sequence  # type: ignore[assignment]
        elif item.spans is not None:
            for stream_id, (_, last) in item.spans.items():
                if stream_id in self.streams:
                    self.sent_sequences[stream_id] = last

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def queued_ticks(self) -> int:
        """Ticks queued (live and replayed; other messages count one each)."""
        return self._load + self._replay_load
