"""`Changes`: await a condition on state that callbacks update, without polling.

Shared by the server's connection registry and the client's event log: whoever changes the
state calls `notify()`, and `wait_for(predicate, timeout)` re-checks on every notification.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Changes:
    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """Wake every waiter once (each then waits on a fresh event)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Return once predicate() holds; TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()
