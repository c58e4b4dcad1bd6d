"""Sources of receive-ordered tick chunks (a store slice, an IB page) as one receive order.

Each source yields chunks (`Ticks`), each oldest first and none before the source's `lo`;
`merged` hands on, after every chunk a source gave, the ticks every source has passed (a
k-way merge that holds one chunk per active source), and opens a source only once the merge
reaches its `lo`, so a request with many holes holds few at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from ibstream.server.tick_columns import Ticks

FAR = 2**62  # a receive time after any


@dataclass
class _Feed:
    lo: int
    chunks: AsyncIterator[Ticks]
    buffer: Ticks = field(default_factory=Ticks.empty)
    at: int = 0


async def merged(
    sources: list[tuple[int, AsyncIterator[Ticks]]],
) -> AsyncIterator[tuple[Ticks, int]]:
    """Chunks of several sources (each oldest first, none before its `lo`) as one receive
    order: (ticks, the receive time every later tick is at or after), after every chunk a
    source gave. A source is read only once the merge reaches its `lo`."""
    pending = sorted((_Feed(lo, it) for lo, it in sources), key=lambda f: f.lo)
    pending.reverse()
    active: list[_Feed] = []
    while pending or active:
        if not active or (pending and pending[-1].lo <= _frontier(active)):
            active.append(pending.pop())
        feed = next((f for f in active if f.at >= len(f.buffer)), None)
        if feed is not None:
            chunk = await anext(feed.chunks, None)
            if chunk is None:
                active.remove(feed)
            else:
                feed.buffer, feed.at = chunk, 0
            if any(f.at >= len(f.buffer) for f in active):
                horizon = min([f.lo for f in pending] + [_frontier(active)], default=FAR)
                yield Ticks.empty(), horizon
                continue
        if not active:
            continue
        horizon = _frontier(active)
        if pending and pending[-1].lo <= horizon:
            continue
        runs = []
        for f in active:
            cut = f.at + int(np.searchsorted(f.buffer.recv_ns[f.at :], horizon, side="right"))
            runs.append(f.buffer[f.at : cut])
            f.at = cut
        yield Ticks.merge(runs), horizon


def _frontier(active: list[_Feed]) -> int:
    """How far every active source has given its ticks (its buffer's last receive time)."""
    ends = [int(f.buffer.recv_ns[-1]) if f.at < len(f.buffer) else f.lo for f in active]
    return min(ends) if ends else FAR
