"""How ticks reach the dashboard and when it redraws.

The client's loop thread hands each tick to `Inbox.put` (a list append under a lock: the
callback must be quick). A `Ticker` calls the dashboard's step at most `rate` times a
second: as an asyncio task on the loop running in the calling thread (a Jupyter kernel's,
so widget messages leave from the kernel thread and cells stay free between steps), or,
where no loop runs (a plain script), on a daemon thread. A bound method is held only
weakly, so stepping never keeps its owner alive; the `Ticker` stops once the owner is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable

log = logging.getLogger("ibstream.widgets")
MAX_PENDING = 200_000  # ticks waiting for a step: 200 s at 1,000/s, some 150 MB of dicts
MIN_IDLE = 0.02  # seconds a step leaves the loop to other work, however long it took


class Inbox:
    """Ticks received and not yet taken, bounded: beyond `limit` ticks are counted as
    `dropped` (the kernel was blocked for minutes) rather than held without bound."""

    def __init__(self, limit: int = MAX_PENDING) -> None:
        self.limit = limit
        self.received = 0
        self.dropped = 0
        self.last_arrival: float | None = None  # time.monotonic() of the latest tick
        self._rows: list[dict] = []
        self._lock = threading.Lock()

    def put(self, tick: dict) -> None:
        with self._lock:
            self.received += 1
            self.last_arrival = time.monotonic()
            if len(self._rows) < self.limit:
                self._rows.append(tick)
            else:
                self.dropped += 1

    def take(self) -> list[dict]:
        with self._lock:
            rows, self._rows = self._rows, []
        return rows

    def __len__(self) -> int:
        return len(self._rows)


class Ticker:
    """Runs `step()` every `interval` seconds at most, until `stop()` or until the owner of
    a bound-method `step` has been collected."""

    def __init__(self, step: Callable[[], None], interval: float = 0.1) -> None:
        self._step: Callable[[], Callable[[], None] | None]
        if inspect.ismethod(step):
            self._step = weakref.WeakMethod(step)
        else:
            self._step = lambda: step
        self.interval = interval
        self.failures = 0
        self.mode = ""  # "asyncio" or "thread" once started
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        loop = _running_loop()
        if loop is not None:
            self.mode, self._loop = "asyncio", loop
            self._task = loop.create_task(self._run_task(), name="ibstream-dashboard")
        else:
            self.mode = "thread"
            self._thread = threading.Thread(
                target=self._run_thread, name="ibstream-dashboard", daemon=True
            )
            self._thread.start()

    @property
    def running(self) -> bool:
        if self._task is not None:
            return not self._task.done()
        return self._thread is not None and self._thread.is_alive()

    def stop(self, wait: bool = True) -> None:
        """Stop stepping: the task is cancelled (it ends at its next await), the thread
        told to end and, with `wait`, joined."""
        self._stop.set()
        if self._task is not None and self._loop is not None:
            if _running_loop() is self._loop:
                self._task.cancel()
            elif not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._task.cancel)
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(5.0, 10 * self.interval))

    async def wait_stopped(self) -> None:
        """Await the task's end (for callers on its loop that must see it gone)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _guarded_step(self) -> float:
        started = time.perf_counter()
        step = self._step()
        if step is None:  # its owner was collected: nothing left to step
            self._stop.set()
            return 0.0
        try:
            step()
        except Exception:
            self.failures += 1
            if self.failures <= 3 or self.failures % 100 == 0:
                log.exception("dashboard redraw failed (%d time(s))", self.failures)
        return time.perf_counter() - started

    async def _run_task(self) -> None:
        while not self._stop.is_set():
            took = self._guarded_step()
            await asyncio.sleep(max(self.interval - took, MIN_IDLE))

    def _run_thread(self) -> None:
        while not self._stop.is_set():
            took = self._guarded_step()
            self._stop.wait(max(self.interval - took, MIN_IDLE))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
