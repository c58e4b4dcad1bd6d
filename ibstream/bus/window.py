"""A gathering window's packs back into the source's order across streams (an edge's side).

The source sends each stream's ticks of about a millisecond as one message (`wire.py`), so
the packs of one window hold interleaved streams side by side. A client that watches two
streams of a contract must get them interleaved as the source's own clients do, so the edge
holds a window's packs until its last one (`END`) and merges them by the source's ordinal.
An event, a pack of another source run, or `wait` seconds without the window's end (a
source killed mid-window never sends it) hand on what is held.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable
from operator import itemgetter

from ibstream.bus.wire import BusTick, Pack

log = logging.getLogger(__name__)
_ORDINAL = itemgetter(0)


class WindowMerge:
    """Hands each tick of the packs given to `deliver`, in the source's order."""

    def __init__(self, deliver: Callable[[BusTick], None], *, wait: float = 0.05):
        self.deliver = deliver
        self.wait = wait
        self._held: list[Pack] = []
        self._timer: asyncio.TimerHandle | None = None

    def pack(self, pack: Pack) -> None:
        if self._held and self._held[0].ticks[0].server_id != pack.ticks[0].server_id:
            self.flush()  # another source run: the old one's window never ends
        held = self._held
        if pack.end and not held:  # a window of one pack (one stream busy): as it is
            self._hand(pack.ticks)
            return
        held.append(pack)
        if pack.end:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.wait, self.flush)

    def flush(self) -> None:
        """Hand on what is held, merged by ordinal."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held = self._held, []
        if len(held) == 1:
            self._hand(held[0].ticks)
        elif held:
            merged = heapq.merge(
                *(zip(p.ordinals, p.ticks, strict=True) for p in held), key=_ORDINAL
            )
            self._hand([tick for _, tick in merged])

    def _hand(self, ticks: list[BusTick]) -> None:
        deliver = self.deliver
        for tick in ticks:
            try:
                deliver(tick)
            except Exception:  # a bug handling one tick must not lose the others: said
                log.exception("bus: handling a tick of %s failed", tick.contract_id)
