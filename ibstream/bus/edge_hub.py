"""`EdgeHub`: the live hub, fed from the bus instead of numbering ticks itself.

Sequences and encodings are the source's (`publish_entry`: the bus body already is the
source's `EncodedTick`), and so is `server_id`, so a client moving between edges and the
source resumes with `resume_from` without a gap or a repeat. Its channels are kept whether
or not a client holds them: every stream's ring fills from the bus, so a client failing over
from another edge finds its resume window here; when the last client leaves (after the
grace period) only the hold at the source is released (`_drop`), the channel and its ring
stay until the hub closes.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

from ibstream.model import ContractInfo, TickType
from ibstream.protocol.encode import EncodedTick
from ibstream.server.hub import Channel, Hub, StreamKey

if TYPE_CHECKING:
    from ibstream.bus.edge import BusSource
    from ibstream.server.stream import StreamHandle

log = logging.getLogger(__name__)


class EdgeHub(Hub):
    """A hub whose ticks come numbered and encoded from the source over the bus."""

    source: BusSource

    def __init__(self, source: BusSource, *, ring_size: int = 10_000, grace: float = 30.0):
        super().__init__(source, ring_size=ring_size, grace_seconds=grace)  # type: ignore[arg-type]

    async def prepare(self, contract: ContractInfo, tick_types: list[TickType]) -> None:
        """Before a subscribe attaches: the streams this edge does not hold yet are held at
        the source (a source that does not answer fails the subscribe whole)."""
        held = {key for key, ch in self.channels.items() if ch.held}
        wanted = [t for t in tick_types if (contract.contract_id, t) not in held]
        if wanted:
            await self.source.prepare(contract, wanted)

    def drop_unused(self, handle: StreamHandle) -> None:
        """A subscribe failed after `prepare`: the holds it took and left unused go too."""
        super().drop_unused(handle)
        key = StreamKey(handle.contract.contract_id, handle.tick_type)
        channel = self.channels.get(key)
        if channel is None or not channel.held:
            self.source.holds.forgo(key)

    def _drop(self, key: StreamKey) -> None:
        """A channel's last member is gone (or its stream failed): upstream is released, the
        channel and its ring stay; forgotten only when the hub closes."""
        channel = self.channels.get(key)
        if channel is None or self.closed:
            super()._drop(key)
            return
        if channel.expiry is not None:
            channel.expiry.cancel()
        channel.expiry = channel.idle_until = None
        if channel.held:
            channel.held = False
            self.source.unsubscribe(key.contract_id, key.tick_type)
            log.info("upstream released (channel kept): %s %s", *key)

    def _free_idle_slot(self, needed: StreamKey) -> bool:
        """IB's slots (10190) are the source's to free: an edge's idle channels hold none."""
        return False

    def publish_entry(self, key: StreamKey, contract: ContractInfo, entry: EncodedTick) -> None:
        """A tick as the source numbered and encoded it. Opens a kept channel (not held
        upstream) for a stream no client holds yet; an entry not after the stream's last
        sequence (a redelivery) is dropped."""
        if entry.sequence <= self._sequences.get(key, 0):
            return
        channel = self.channels.get(key)
        if channel is None:  # where it opened upstream is unknown: older ticks are not_buffered
            channel = self.open_kept(key, contract, 0, reopened=False)
        self.ticks_in += 1
        self._sequences[key] = entry.sequence
        channel.ring.append(entry)
        channel.ticks += 1
        for handle in tuple(channel.members):  # a copy: delivering may end a stream
            handle.deliver(entry)

    def open_kept(
        self, key: StreamKey, contract: ContractInfo, last: int, *, reopened: bool = True
    ) -> Channel:
        """A kept channel for a stream whose numbering stands at `last`; `reopened`: the
        stream (re)opened upstream there, so resumes from before it get the `upstream_idle`
        gap, as on the source (else older ticks are just not buffered)."""
        channel = self.channels.get(key)
        if channel is None:
            channel = Channel(key, contract, deque(maxlen=self.ring_size), held=False)
            self.channels[key] = channel
        if reopened:
            channel.opened_at = last
        self._sequences[key] = max(self._sequences.get(key, 0), last)
        return channel

    def renumber(self, server_id: str) -> None:
        """The source restarted: every channel, ring and sequence is forgotten, and the
        holds with them (the new source has none)."""
        for channel in self.channels.values():
            if channel.expiry is not None:
                channel.expiry.cancel()
        self.channels.clear()
        self._sequences.clear()
        self.server_id = server_id
