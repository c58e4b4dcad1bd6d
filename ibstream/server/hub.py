"""The hub: one upstream subscription per (contract, tick type), fanned out to every client.

Each channel numbers its ticks (sequences never restart while the server lives), keeps a ring
buffer of recent encoded ticks for resume, and hands each tick to its members without ever
awaiting, so a slow client cannot stall the others (see `subscriber.Subscriber`).

A channel outlives its last member by a grace period: it keeps receiving and numbering ticks,
so a lone client that reconnects within it resumes without a gap.

Sequences only mean something within one hub: `server_id` (random per hub, so per server
start) tells a client whether the positions it holds are still valid after a reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from ibstream.errors import ErrorCode, StreamError
from ibstream.model import ContractInfo, Tick, TickType, iso_timestamp
from ibstream.protocol.encode import EncodedTick, encode_tick

if TYPE_CHECKING:
    from ibstream.bus.publisher import BusPublisher
    from ibstream.ib.source import IBSource, SourceEvent
    from ibstream.server.subscriber import StreamHandle
    from ibstream.store.recorder import Recorder

log = logging.getLogger(__name__)
_OUTAGES_KEPT = 32  # IB connection losses remembered per channel, for resume gap reports


class StreamKey(NamedTuple):
    contract_id: int
    tick_type: TickType


def unknown_sequence(after: int, last: int, then: str) -> dict:
    """The gap of a resume position beyond the stream's last sequence; `then` says what
    the stream does instead."""
    return {
        "reason": "unknown_sequence",
        "resume_from": after,
        "last_sequence": last,
        "message": f"resume_from {after} is beyond this stream's last sequence {last} {then}",
    }


@dataclass(eq=False)
class Channel:
    """One upstream stream and the client streams attached to it."""

    key: StreamKey
    contract: ContractInfo
    ring: deque[EncodedTick]
    members: set[StreamHandle] = field(default_factory=set)
    ticks: int = 0
    opened_at: int = 0  # the stream's last sequence when this channel (re)opened
    # The stream's last sequence at each IB connection loss: ticks IB sent meanwhile are lost.
    outages: deque[int] = field(default_factory=lambda: deque(maxlen=_OUTAGES_KEPT))
    expiry: asyncio.TimerHandle | None = None  # pending close while no member is left
    idle_until: float | None = None  # wall-clock time of that close
    # the client stream whose subscribe opened it (weak: a channel outlives its first client)
    opened_for: weakref.ref[StreamHandle] | None = None
    held: bool = True  # subscribed upstream (a bus edge keeps channels it does not hold)


@dataclass(eq=False)
class QuietMember:
    """A hub member that delivers nowhere: it only keeps its channel open upstream (the
    recorder's kept streams, an edge's hold over the bus take the ticks another way)."""

    contract: ContractInfo
    tick_type: TickType
    active: bool = field(default=True, kw_only=True)

    def deliver(self, entry: object, *, replayed: bool = False) -> None:
        pass

    def notify(self, status: str, text: str, details: dict | None = None) -> None:
        pass

    def fail(self, error: StreamError) -> None:
        self.active = False


class Hub:
    """Fan-out between one `IBSource` and many subscribers."""

    def __init__(self, source: IBSource, *, ring_size: int = 10_000, grace_seconds: float = 30.0):
        if grace_seconds < 0:
            raise ValueError(f"grace_seconds must be >= 0, not {grace_seconds}")
        self.source = source
        self.server_id = secrets.token_hex(8)  # new numbering: every position before is void
        self.ring_size = ring_size
        self.grace_seconds = grace_seconds
        self.channels: dict[StreamKey, Channel] = {}
        self._sequences: dict[StreamKey, int] = {}
        self.ticks_in = 0
        self.closed = False
        self.recorder: Recorder | None = None  # writes every numbered tick to the store
        self.bus: BusPublisher | None = None  # puts every numbered tick on the NATS bus
        source.on_tick = self.publish
        source.on_event = self.on_source_event

    async def resolve(self, spec: str | int) -> ContractInfo:
        return await self.source.resolve(spec)

    def attach(self, handle: StreamHandle) -> None:
        """Join a channel, subscribing upstream if it is the first member."""
        if not handle.active:  # ended while its subscribe was under way: never re-join
            return
        if getattr(handle, "start_ns", None) is not None:  # members without one: None
            raise StreamError(
                ErrorCode.INVALID_MESSAGE,
                "'start' replays a recording from a time: only a replay server (`ibstream "
                "replay DIR`) takes it; this server streams live ticks",
                details={"field": "start", "expected": "no start on a live server"},
            )
        key = StreamKey(handle.contract.contract_id, handle.tick_type)
        channel = self.channels.get(key)
        if channel is None:
            self.source.subscribe(handle.contract, handle.tick_type)
            channel = Channel(
                key,
                handle.contract,
                deque(maxlen=self.ring_size),
                opened_at=self._sequences.get(key, 0),
                opened_for=weakref.ref(handle),
            )
            self.channels[key] = channel
            if self.bus is not None:
                self.bus.stream_opened(handle.contract, handle.tick_type, channel.opened_at)
            log.info("upstream subscribed: %s %s", key.contract_id, key.tick_type)
        elif channel.expiry is not None:
            channel.expiry.cancel()
            channel.expiry = channel.idle_until = None
            log.info("upstream kept (client back within grace): %s %s", *key)
        elif not channel.held:  # a kept channel nobody held: hold it upstream again
            self.source.subscribe(handle.contract, handle.tick_type)
            channel.held = True
            log.info("upstream held: %s %s", key.contract_id, key.tick_type)
        channel.members.add(handle)

    def replay(self, key: StreamKey, after: int) -> tuple[list[EncodedTick], list[dict]]:
        """Buffered ticks after sequence `after`, and what could not be replayed (gaps).

        Gaps: ticks older than the ring, ticks IB sent while no channel was open (never
        received, so never numbered), while IB was disconnected, and positions from before
        a restart.
        """
        channel = self.channels.get(key)
        last = self._sequences.get(key, 0)
        if channel is None:
            return [], []
        if after > last:
            return [], [
                unknown_sequence(
                    after, last, "(did the server restart?); streaming live ticks only"
                )
            ]
        entries = [entry for entry in channel.ring if entry.sequence > after]
        first = entries[0].sequence if entries else last + 1
        gaps = []
        if first > after + 1:
            gaps.append(
                {
                    "reason": "not_buffered",
                    "first_missing": after + 1,
                    "last_missing": first - 1,
                    "message": f"ticks {after + 1}-{first - 1} are no longer buffered "
                    f"(the server keeps the last {self.ring_size} per stream)",
                }
            )
        if 0 < channel.opened_at and after <= channel.opened_at:
            gaps.append(
                {
                    "reason": "upstream_idle",
                    "after_sequence": channel.opened_at,
                    "message": f"no client held this stream after sequence {channel.opened_at}"
                    ", so ticks IB sent meanwhile were not received",
                }
            )
        lost = [seq for seq in channel.outages if seq >= after]
        if lost:
            gaps.append(
                {
                    "reason": "ib_disconnected",
                    "after_sequences": lost,
                    "message": f"the IB connection was lost after sequence {lost[0]}"
                    + (f" (and {len(lost) - 1} more time(s))" if len(lost) > 1 else "")
                    + "; ticks IB sent while it was down were not received",
                }
            )
        return entries, gaps

    def detach(self, handle: StreamHandle) -> None:
        """Leave a channel; when the last member is out, close it after the grace period."""
        key = StreamKey(handle.contract.contract_id, handle.tick_type)
        channel = self.channels.get(key)
        if channel is None or handle not in channel.members:
            return
        channel.members.discard(handle)
        if channel.members:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if self.grace_seconds <= 0 or self.closed or loop is None:
            self._drop(key)
            return
        channel.expiry = loop.call_later(self.grace_seconds, self._expire, channel)
        channel.idle_until = time.time() + self.grace_seconds
        log.info("upstream idle for up to %gs: %s %s", self.grace_seconds, *key)

    def drop_unused(self, handle: StreamHandle) -> None:
        """Cancel the channel that the failed subscribe of `handle` opened, now that no member
        is left, rather than after the grace period. A channel that was there before (another
        client's, maybe idle in its grace period for a resume) keeps its grace."""
        key = StreamKey(handle.contract.contract_id, handle.tick_type)
        channel = self.channels.get(key)
        opener = channel.opened_for() if channel is not None and channel.opened_for else None
        if channel is not None and not channel.members and opener is handle:
            self._drop(key)

    def _expire(self, channel: Channel) -> None:
        if self.channels.get(channel.key) is channel and not channel.members:
            self._drop(channel.key)

    def _drop(self, key: StreamKey) -> None:
        """Forget a channel and cancel its upstream subscription."""
        channel = self.channels.get(key)
        if channel is None:
            return
        if channel.expiry is not None:
            channel.expiry.cancel()
        del self.channels[key]
        if channel.held:
            self.source.unsubscribe(key.contract_id, key.tick_type)
        if self.recorder is not None:
            self.recorder.stream_closed(key.contract_id, key.tick_type)
        if self.bus is not None:
            self.bus.stream_closed(key, self._sequences.get(key, 0))
        log.info("upstream cancelled: %s %s", key.contract_id, key.tick_type)

    def close(self) -> None:
        """Server shutdown: cancel pending grace timers and every upstream subscription."""
        self.closed = True
        for key in list(self.channels):
            self._drop(key)

    def last_sequence(self, contract_id: int, tick_type: TickType) -> int:
        return self._sequences.get(StreamKey(contract_id, tick_type), 0)

    def publish(self, tick: Tick) -> None:
        """Called by the source for every tick, in arrival order."""
        key = (tick.contract_id, tick.tick_type)  # finds StreamKey entries: a tuple is cheaper
        channel = self.channels.get(key)  # type: ignore[call-overload]
        if channel is None:
            return
        self.ticks_in += 1
        sequences = self._sequences
        seq = sequences[key] = sequences[key] + 1 if key in sequences else 1  # type: ignore[index]
        entry = encode_tick(tick, seq)
        if self.recorder is not None:
            self.recorder.add(key, channel.contract, tick, seq)  # type: ignore[arg-type]
        if self.bus is not None:
            self.bus.tick(key, entry)  # type: ignore[arg-type]
        channel.ring.append(entry)
        channel.ticks += 1
        for handle in tuple(channel.members):  # a copy: delivering may end a stream
            handle.deliver(entry)

    def on_source_event(self, event: SourceEvent) -> None:
        """Connection changes go to every stream; a stream error ends that channel at once."""
        if event.key is None:
            for channel in self.channels.values():
                last = self._sequences.get(channel.key, 0)
                if event.status == "ib_disconnected" and last not in channel.outages:
                    channel.outages.append(last)
            held = [(*key, self._sequences.get(key, 0)) for key in self.channels]
            if self.recorder is not None:
                self.recorder.connection_changed(event.status, held)
            if self.bus is not None:
                self.bus.connection_changed(event.status, event.message, event.details, held)
            self.broadcast(event.status, event.message, event.details)
            return
        key = StreamKey(*event.key)
        channel = self.channels.get(key)
        if channel is None:
            return
        if event.error is not None:  # upstream is gone: no grace, a new subscribe starts over
            if event.error.details.get("ib_code") == 10190 and self._free_idle_slot(key):
                self.source.subscribe(channel.contract, key.tick_type)  # retry in that slot
                return
        if self.bus is not None:
            self.bus.stream_event(event, self._sequences.get(key, 0))
        if event.error is not None:
            self._drop(key)
        for handle in list(channel.members):
            if event.error is not None:
                handle.fail(event.error)
            else:
                handle.notify(event.status, event.message, event.details)

    def broadcast(self, status: str, message: str, details: dict | None = None) -> None:
        """An `info` to every client stream (connection and recording changes)."""
        for channel in list(self.channels.values()):
            for handle in list(channel.members):
                handle.notify(status, message, details)

    def _free_idle_slot(self, needed: StreamKey) -> bool:
        """Out of tick-by-tick slots (IB 10190): close the channel idle longest (in its grace
        period, no member left) so `needed` can take its slot; False when none is idle."""
        idle = [ch for ch in self.channels.values() if not ch.members and ch.key != needed]
        if not idle:
            return False
        self._drop(min(idle, key=lambda ch: ch.idle_until or 0.0).key)
        return True

    def stats(self) -> dict:
        return {
            "server_id": self.server_id,
            "upstream_streams": len(self.channels),
            "idle_streams": sum(1 for ch in self.channels.values() if not ch.members),
            "grace_seconds": self.grace_seconds,
            "ticks_in": self.ticks_in,
            "channels": [
                {
                    "contract_id": ch.key.contract_id,
                    "tick_type": ch.key.tick_type.value,
                    "clients": len(ch.members),
                    "ticks": ch.ticks,
                    "last_sequence": self._sequences.get(ch.key, 0),
                    "idle_until": None
                    if ch.idle_until is None
                    else iso_timestamp(int(ch.idle_until * 1e9)),
                }
                for ch in self.channels.values()
            ],
        }
