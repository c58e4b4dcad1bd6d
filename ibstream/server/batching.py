"""Batched tick frames: a subscriber's batched streams collect their ticks for `batch_ms`
and go out as one `ticks` message each.

One timer per subscriber (not per stream) flushes every batch that is due, so a client with
many batched streams costs one timer. A batch also goes out as soon as it holds
`MAX_BATCH_TICKS`, so frames stay bounded whatever the tick rate (2,000 ticks are about
0.5 MB: under the 1 MiB frame limit common WebSocket clients such as `websockets` default to).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from ibstream.protocol.encode import EncodedTick, Outgoing, batch_message

if TYPE_CHECKING:
    from ibstream.server.stream import StreamHandle

MAX_BATCH_TICKS = 2_000


class _Pending:
    __slots__ = ("items", "last", "due", "replayed")

    def __init__(self, due: float, replayed: bool):
        self.items: list[bytes] = []
        self.last = 0
        self.due = due
        self.replayed = replayed


class Batcher:
    """The pending batches of one subscriber's streams and the timer that sends them."""

    def __init__(self, put: Callable[[Outgoing], None], max_ticks: int = MAX_BATCH_TICKS):
        self._put = put
        self.max_ticks = max_ticks
        self._pending: dict[StreamHandle, _Pending] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = 0.0

    def add(self, handle: StreamHandle, entry: EncodedTick, replayed: bool = False) -> None:
        """Hold a tick for its stream's next batch (sent at once when the batch is full)."""
        batch = self._pending.get(handle)
        if batch is not None and batch.replayed != replayed:
            self.flush(handle)
            batch = None
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._pending[handle] = _Pending(loop.time() + handle.batch_seconds, replayed)
            self._arm(loop, batch.due)
        batch.items.append(entry.item)
        batch.last = entry.sequence
        if len(batch.items) >= self.max_ticks:
            self.flush(handle)

    def flush(self, handle: StreamHandle) -> None:
        """Send what `handle` holds now (before its other messages, so order is kept)."""
        batch = self._pending.pop(handle, None)
        if batch is not None and batch.items:
            self._put(
                batch_message(
                    handle.batch_prefix, batch.items, batch.last, handle.stream_id, batch.replayed
                )
            )

    def discard(self, handle: StreamHandle) -> None:
        self._pending.pop(handle, None)

    def close(self) -> None:
        self._pending.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        if self._timer is not None:
            if self._armed_for <= due:
                return  # it fires first, and re-arms for this batch
            self._timer.cancel()
        self._armed_for = due
        self._timer = loop.call_at(due, self._fire)

    def _fire(self) -> None:
        """Send every batch due by the time this timer was set for; re-arm for the rest."""
        self._timer = None
        for handle in [h for h, b in self._pending.items() if b.due <= self._armed_for]:
            self.flush(handle)
        if self._pending:
            due = min(batch.due for batch in self._pending.values())
            self._arm(asyncio.get_running_loop(), due)
