"""An edge's one view of the bus: a NATS connection and one ordered JetStream consumer of
`ibstream.>` (ticks and events in the order the source published them).

It starts at the newest source run (the first message on the newest `ibstream.events.<id>`
subject, which is that run's `source_started`), or `catch_up` seconds back if the run is
older: enough to fill the resume buffers without reading a day of ticks at start-up. nats-py
reconnects forever (a NATS not there at start-up too); after a reconnect the consumer starts
again from the time of the last message it had (`starts.py`: sequences can be reused after a
NATS crash), and what arrives twice is dropped: ticks by their stream sequence (the hub),
events by their number. Each outage is logged once, and once when it ends. A malformed
message is logged (the first of a run of them) and skipped. Ticks come in packs, a stream's
ticks of about a millisecond each; `window.py` puts them back in the source's order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from ibstream.bus import starts, wire
from ibstream.bus.link import connection_status
from ibstream.bus.window import WindowMerge
from ibstream.errors import StreamError

log = logging.getLogger(__name__)


class BusFeed:
    """Connects, finds the newest source run, and hands each message on in order."""

    def __init__(
        self,
        url: str,
        on_tick: Callable[[wire.BusTick], None],
        on_event: Callable[[dict], None],
        on_link: Callable[[bool, str], None],
        *,
        retry: float = 1.0,
        catch_up: float = 600.0,
        name: str = "ibstream-edge",
    ):
        self.url = url
        self.on_tick, self.on_event, self.on_link = on_tick, on_event, on_link
        self.retry = retry
        self.catch_up = catch_up
        self.name = name
        self.nc: Any = None
        self.consuming = False
        self.down_since: float | None = time.monotonic()  # not following the bus since
        self.last_error: str | None = None
        self.messages = 0
        self.malformed = 0
        self.outages = 0
        self._task: asyncio.Task | None = None
        self._sub: Any = None
        self._bad_run = False  # inside a run of malformed messages (logged once)
        self._told = False  # the unreachable-at-start line was logged
        self._last_reply: str | None = None  # the last message's reply subject (its stamp)
        self._events: dict[str, int] = {}  # the newest run's last event number
        self._resuming: asyncio.Task | None = None
        self._window = WindowMerge(on_tick)

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected and self.consuming

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ibstream-bus-feed")

    async def stop(self) -> None:
        for task in (self._task, self._resuming):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.consuming = False  # a close of our own is no outage
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()

    def status(self) -> dict:
        return {
            **connection_status(
                self.url, self.connected, self.outages, self.down_since, self.last_error
            ),
            "messages": self.messages,
            "malformed": self.malformed,
        }

    async def _run(self) -> None:
        """Connect (nats-py tries again and again while NATS is away), then consume."""
        import nats

        while self.nc is None:
            try:
                self.nc = await nats.connect(
                    self.url.split(","),  # a cluster's nodes, any of them
                    name=self.name,
                    connect_timeout=2,
                    reconnect_time_wait=self.retry,
                    max_reconnect_attempts=-1,  # the first connect too: until NATS answers
                    allow_reconnect=True,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                    error_cb=self._error,
                )
            except Exception as exc:  # an URL no attempt can reach (a name that never resolves)
                self._failed(exc)
                await asyncio.sleep(self.retry)  # nats-py gave up: our own retry interval
        if self._told:
            log.warning("bus: NATS at %s reachable again", self.url)
        await self._consume()

    async def _consume(self) -> None:
        """Follow the stream from the newest run's start (retried while the source has not
        created the JetStream stream yet)."""
        await self._follow(lambda js: starts.run_start(self.nc, js, self.catch_up))
        log.info("bus: following %s on %s from its newest source run", wire.STREAM, self.url)

    async def _resume(self) -> None:
        """After a reconnect: follow again from the last message's time (see `starts.py`)."""
        old, self._sub = self._sub, None
        if old is not None:
            with contextlib.suppress(Exception):  # its consumer died with NATS, most often
                await old.unsubscribe()
        stamp = starts.stamp_of(self._last_reply)
        if stamp is None:
            await self._consume()
        else:
            await self._follow(lambda js: starts.first_since(self.nc, js, stamp))
        log.warning("bus: NATS at %s back; caught up from the stream", self.url)

    async def _follow(self, start: Callable[[Any], Awaitable[int]]) -> None:
        import nats.js.api as api
        import nats.js.errors

        js = self.nc.jetstream()
        told = False
        while self._sub is None:
            try:
                config = api.ConsumerConfig(
                    deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=await start(js),
                    filter_subjects=list(wire.SUBJECTS),
                )
                self._sub = await js.subscribe(
                    wire.SUBJECTS[0],
                    stream=wire.STREAM,
                    cb=self._message,
                    ordered_consumer=True,
                    config=config,
                    idle_heartbeat=1.0,
                )
            except (nats.js.errors.Error, nats.errors.Error, TimeoutError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
                if not told:
                    told = True
                    log.warning(
                        "bus: no %s stream to follow at %s yet (%s); has the source started "
                        "(`ibstream serve --bus`)? retrying every %g s",
                        wire.STREAM,
                        self.url,
                        self.last_error,
                        self.retry,
                    )
                await asyncio.sleep(self.retry)
        self.consuming = True
        self.down_since = None
        self.on_link(True, f"the bus (NATS at {self.url}) is connected")

    async def _message(self, msg: Any) -> None:
        self.messages += 1
        self._last_reply = msg.reply
        subject = msg.subject
        try:
            if subject.startswith(wire.TICKS + "."):
                pack, event = wire.parse_pack(subject, msg.data), None
            else:
                pack, event = None, orjson.loads(msg.data)
                if not isinstance(event, dict) or not isinstance(event.get("status"), str):
                    raise ValueError("an event is an object with a `status`")
                if not isinstance(event.get("server_id"), str):
                    raise ValueError("an event names its `server_id`")
        except (ValueError, StreamError) as exc:  # orjson's JSONDecodeError is a ValueError
            self.malformed += 1
            if not self._bad_run:
                self._bad_run = True
                log.warning("bus: skipped a malformed message on %s: %s", subject, exc)
            return
        self._bad_run = False
        if pack is not None:
            self._window.pack(pack)  # each tick handed on alone: a failing one is said there
            return
        self._window.flush()  # the ticks before the event first
        try:
            if not self._seen_before(event["server_id"], msg.headers):
                self.on_event(event)
        except Exception:  # a bug handling one message must not stop the feed: said, skipped
            log.exception("bus: handling a message on %s failed", subject)

    def _seen_before(self, server_id: str, headers: dict | None) -> bool:
        """An event had already (its message id `<server_id>.event.<n>`), after a resume."""
        msg_id = headers.get(wire.MSG_ID) if headers else None
        head, _, number = (msg_id or "").rpartition(".event.")
        if head != server_id or not number.isdigit():
            return False
        if int(number) <= self._events.get(server_id, 0):
            return True
        self._events = {server_id: int(number)}  # only the newest run's count matters
        return False

    async def _disconnected(self) -> None:
        if self.consuming:
            self.consuming = False
            self.outages += 1
            self.down_since = time.monotonic()
            self.last_error = "NATS connection lost"
            log.warning("bus: NATS at %s lost; reconnecting (clients are told)", self.url)
            self.on_link(False, f"the bus (NATS at {self.url}) is away; reconnecting")

    async def _reconnected(self) -> None:
        if self._sub is not None and not self.consuming:
            self._resuming = asyncio.create_task(self._resume(), name="ibstream-bus-resume")

    async def _error(self, exc: Exception) -> None:
        self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        """Every connection error; the first one before NATS ever answered is the one log
        line of a bus that is unreachable at start-up."""
        self.last_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if self.nc is None and not self._told:
            self._told = True
            self.outages += 1
            log.warning(
                "bus: NATS unreachable at %s (%s); serving degraded, retrying every %g s",
                self.url,
                self.last_error,
                self.retry,
            )
            self.on_link(False, f"the bus (NATS at {self.url}) is not reachable")
        log.debug("bus: %s", self.last_error)
