"""The hub: one upstream subscription per (contract, tick type), fanned out to every client.

Each channel numbers its ticks (sequences never restart while the server lives), keeps a ring
buffer of recent encoded ticks for resume, and hands each tick to its members without ever
awaiting, so a slow client cannot stall the others (see `subscriber.Subscriber`).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from ibstream.messages import encode_tick_tail
from ibstream.model import ContractInfo, Tick, TickType

if TYPE_CHECKING:
    from ibstream.source import IBSource, SourceEvent
    from ibstream.subscriber import StreamHandle

log = logging.getLogger(__name__)


class StreamKey(NamedTuple):
    contract_id: int
    tick_type: TickType


@dataclass(eq=False)
class Channel:
    """One upstream stream and the client streams attached to it."""

    key: StreamKey
    contract: ContractInfo
    ring: deque[tuple[int, bytes]]
    members: set[StreamHandle] = field(default_factory=set)
    ticks: int = 0
    opened_at: int = 0  # the stream's last sequence when this channel (re)opened


class Hub:
    """Fan-out between one `IBSource` and many subscribers."""

    def __init__(self, source: IBSource, *, ring_size: int = 10_000):
        self.source = source
        self.ring_size = ring_size
        self.channels: dict[StreamKey, Channel] = {}
        self._sequences: dict[StreamKey, int] = {}
        self.ticks_in = 0
        source.on_tick = self.publish
        source.on_event = self.on_source_event

    async def resolve(self, spec: str | int) -> ContractInfo:
        return await self.source.resolve(spec)

    def attach(self, handle: StreamHandle) -> None:
        """Join a channel, subscribing upstream if it is the first member."""
        if not handle.active:  # ended while its subscribe was under way: never re-join
            return
        key = StreamKey(handle.contract.contract_id, handle.tick_type)
        channel = self.channels.get(key)
        if channel is None:
            self.source.subscribe(handle.contract, handle.tick_type)
            channel = Channel(
                key,
                handle.contract,
                deque(maxlen=self.ring_size),
                opened_at=self._sequences.get(key, 0),
            )
            self.channels[key] = channel
            log.info("upstream subscribed: %s %s", key.contract_id, key.tick_type)
        channel.members.add(handle)

    def replay(self, key: StreamKey, after: int) -> tuple[list[tuple[int, bytes]], dict | None]:
        """Buffered ticks after sequence `after`, and what could not be replayed (or None).

        Gaps: ticks older than the ring, ticks IB sent while no client held the channel open
        (they were never received, so never numbered), and positions from before a restart.
        """
        channel = self.channels.get(key)
        last = self._sequences.get(key, 0)
        if channel is None:
            return [], None
        if after > last:
            return [], {
                "reason": "unknown_sequence",
                "resume_from": after,
                "last_sequence": last,
                "message": f"resume_from {after} is beyond this stream's last sequence {last} "
                "(did the server restart?); streaming live ticks only",
            }
        entries = [(seq, tail) for seq, tail in channel.ring if seq > after]
        first = entries[0][0] if entries else last + 1
        if first > after + 1:
            return entries, {
                "reason": "not_buffered",
                "first_missing": after + 1,
                "last_missing": first - 1,
                "message": f"ticks {after + 1}-{first - 1} are no longer buffered "
                f"(the server keeps the last {self.ring_size} per stream)",
            }
        if 0 < channel.opened_at and after <= channel.opened_at:
            return entries, {
                "reason": "upstream_idle",
                "after_sequence": channel.opened_at,
                "message": f"no client held this stream after sequence {channel.opened_at}, "
                "so ticks IB sent meanwhile were not received",
            }
        return entries, None

    def detach(self, handle: StreamHandle) -> None:
        """Leave a channel; the last member out cancels the upstream subscription."""
        key = StreamKey(handle.contract.contract_id, handle.tick_type)
        channel = self.channels.get(key)
        if channel is None or handle not in channel.members:
            return
        channel.members.discard(handle)
        if not channel.members:
            del self.channels[key]
            self.source.unsubscribe(key.contract_id, key.tick_type)
            log.info("upstream cancelled: %s %s", key.contract_id, key.tick_type)

    def last_sequence(self, contract_id: int, tick_type: TickType) -> int:
        return self._sequences.get(StreamKey(contract_id, tick_type), 0)

    def publish(self, tick: Tick) -> None:
        """Called by the source for every tick, in arrival order."""
        key = StreamKey(tick.contract_id, tick.tick_type)
        channel = self.channels.get(key)
        if channel is None:
            return
        self.ticks_in += 1
        seq = self._sequences.get(key, 0) + 1
        self._sequences[key] = seq
        tail = encode_tick_tail(tick, seq)
        channel.ring.append((seq, tail))
        channel.ticks += 1
        for handle in list(channel.members):
            handle.deliver(seq, tail)

    def on_source_event(self, event: SourceEvent) -> None:
        """Connection changes go to every stream; a stream error ends that channel's streams."""
        if event.key is None:
            for channel in list(self.channels.values()):
                for handle in list(channel.members):
                    handle.notify(event.status, event.message, event.details)
            return
        channel = self.channels.get(StreamKey(*event.key))
        if channel is None:
            return
        for handle in list(channel.members):
            if event.error is not None:
                handle.fail(event.error)
            else:
                handle.notify(event.status, event.message, event.details)

    def stats(self) -> dict:
        return {
            "upstream_streams": len(self.channels),
            "ticks_in": self.ticks_in,
            "channels": [
                {
                    "contract_id": ch.key.contract_id,
                    "tick_type": ch.key.tick_type.value,
                    "clients": len(ch.members),
                    "ticks": ch.ticks,
                    "last_sequence": self._sequences.get(ch.key, 0),
                }
                for ch in self.channels.values()
            ],
        }
