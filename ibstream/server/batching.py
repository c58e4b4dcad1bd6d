"""Batched tick frames: a subscriber's batched streams share one pending `ticks` frame that
goes out at most `batch_ms` after its first tick.

One frame per connection and flush, not one per stream, so the ticks of all its streams
reach the client in the order they arrived at the server (a trade after the quote it hit),
each item naming its stream. The frame is due at the earliest interval of the streams in it,
so no tick waits longer than its own stream's `batch_ms`; one timer per subscriber. A frame
also goes out as soon as it holds `MAX_BATCH_TICKS`, so frames stay bounded whatever the tick
rate (2,000 ticks are about 0.6 MB: under the 1 MiB frame limit common WebSocket clients
such as `websockets` default to).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from ibstream.protocol.encode import EncodedTick, Outgoing, batch_message

if TYPE_CHECKING:
    from ibstream.server.stream import StreamHandle

MAX_BATCH_TICKS = 2_000


class Batcher:
    """The pending `ticks` frame of one subscriber's batched streams and its timer."""

    def __init__(self, put: Callable[[Outgoing], None], max_ticks: int = MAX_BATCH_TICKS):
        self._put = put
        self.max_ticks = max_ticks
        self._items: list[bytes] = []
        self._owners: list[str] = []  # the stream id of each item
        self._spans: dict[str, list[int]] = {}  # stream id -> [first, last] sequence
        self._replayed = False
        self._timer: asyncio.TimerHandle | None = None
        self._due = math.inf

    def __len__(self) -> int:
        return len(self._items)

    def add(self, handle: StreamHandle, entry: EncodedTick, replayed: bool = False) -> None:
        """Hold a tick for the next frame (sent at once when the frame is full). Replayed and
        live ticks never share a frame: the queue counts them apart."""
        if replayed is not self._replayed:
            self.flush()
            self._replayed = replayed
        stream_id = handle.stream_id
        span = self._spans.get(stream_id)
        if span is None:
            self._spans[stream_id] = [entry.sequence, entry.sequence]
            self._arm(handle.batch_seconds)
        else:
            span[1] = entry.sequence
        self._items.append(handle.item_prefix + entry.item)
        self._owners.append(stream_id)
        if len(self._items) >= self.max_ticks:
            self.flush()

    def flush(self) -> None:
        """Send the pending frame now (before any other message of its streams)."""
        self._disarm()
        if self._items:
            items, spans = self._items, self._spans
            self._items, self._owners, self._spans = [], [], {}
            self._put(batch_message(items, spans, self._replayed))  # type: ignore[arg-type]

    def discard(self, stream_id: str) -> int:
        """Drop a stream's pending ticks (it was unsubscribed); how many there were."""
        if stream_id not in self._spans:
            return 0
        del self._spans[stream_id]
        kept = [(i, o) for i, o in zip(self._items, self._owners, strict=True) if o != stream_id]
        dropped = len(self._items) - len(kept)
        self._items = [item for item, _ in kept]
        self._owners = [owner for _, owner in kept]
        if not self._items:
            self._disarm()
        return dropped

    def close(self) -> None:
        self._items, self._owners, self._spans = [], [], {}
        self._disarm()

    def _arm(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + seconds
        if due < self._due:
            if self._timer is not None:
                self._timer.cancel()
            self._due = due
            self._timer = loop.call_at(due, self._fire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due = math.inf

    def _fire(self) -> None:
        self._timer = None
        self.flush()
