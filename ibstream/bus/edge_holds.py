"""The streams an edge asks the source to keep subscribed upstream (`ibstream.control.hold`).

A hold is a lease: renewed every third of it while the edge has members for the stream,
released when the hub releases the channel (its grace period after the last member). An edge
that dies stops renewing, so the source frees its streams by itself. A renewal that fails
(the source restarting, NATS away) is logged once per outage and tried again next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

from ibstream.bus.asks import SourceAsks
from ibstream.errors import StreamError
from ibstream.model import TickType

log = logging.getLogger(__name__)
Key = tuple[int, TickType]


class Holds:
    """The held streams of one edge and the task that renews their leases."""

    def __init__(self, asks: SourceAsks, lease: float = 30.0, holder: str | None = None):
        if lease <= 0:
            raise ValueError(f"a hold's lease must be > 0 seconds, not {lease}")
        self.asks = asks
        self.lease = lease
        self.holder = holder or f"edge-{secrets.token_hex(6)}"
        self.keys: set[Key] = set()
        self.renewed: dict[Key, float] = {}  # monotonic time of the last hold the source took
        self.failing = False
        self._task: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()

    async def hold(self, key: Key) -> tuple[str, int]:
        """Ask the source now: its (server_id, last sequence) of the stream."""
        answer = await self.asks.hold(self.holder, key[0], key[1], self.lease)
        self.renewed[key] = time.monotonic()
        return answer

    def add(self, key: Key) -> None:
        """Keep `key` held (asked now unless a hold for it was just taken)."""
        self.keys.add(key)
        if time.monotonic() - self.renewed.get(key, -1e9) > self.lease / 3:
            self._spawn(self._renew(key))
        if self._task is None:
            self._task = asyncio.create_task(self._renewing(), name="ibstream-bus-holds")

    def remove(self, key: Key) -> None:
        """Release `key` at the source."""
        if key in self.keys:
            self.keys.discard(key)
            self.renewed.pop(key, None)
            self._spawn(self._release(key))

    def forgo(self, key: Key) -> None:
        """A hold taken for a subscribe that then failed: released unless kept since."""
        if key not in self.keys and self.renewed.pop(key, None) is not None:
            self._spawn(self._release(key))

    def forget(self) -> None:
        """The source restarted: it holds nothing for us any more (nothing to release)."""
        self.keys.clear()
        self.renewed.clear()

    async def stop(self) -> None:
        """Release every hold (a clean edge stop frees the source's streams at once)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for key in list(self.keys):
            self.remove(key)
        if self._pending:
            await asyncio.wait(self._pending, timeout=self.asks.timeout)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _renewing(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)  # the lease's own clock: nothing to await
            await asyncio.gather(*(self._renew(key) for key in list(self.keys)))

    async def _renew(self, key: Key) -> None:
        try:
            await self.hold(key)
        except StreamError as exc:
            if not self.failing:
                self.failing = True
                log.warning("bus: holding %s %s at the source failed: %s", *key, exc.message)
            return
        if self.failing:
            self.failing = False
            log.warning("bus: the source holds this edge's streams again")

    async def _release(self, key: Key) -> None:
        try:
            await self.asks.release(self.holder, key[0], key[1])
        except StreamError as exc:  # its lease runs out at the source anyway
            log.info("bus: releasing %s %s failed (%s); its lease ends it", *key, exc.message)
