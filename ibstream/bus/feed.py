"""An edge's one view of the bus: a NATS connection and one ordered JetStream consumer of
`ibstream.>` (ticks and events in the order the source published them).

It starts at the newest source run (the first message on the newest `ibstream.events.<id>`
subject, which is that run's `source_started`), so every stream's ring fills from the run's
start and every `stream_opened` (a stream's contract) comes before its ticks. nats-py
reconnects forever; the ordered consumer recreates itself from the last stream sequence it
saw, so an outage of NATS loses nothing the stream still holds. A NATS that is not there at
start-up is tried again every `retry` seconds. Each outage is logged once, and once when it
ends. A malformed message is logged (the first of a run of them) and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson

from ibstream.bus import wire

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
        name: str = "ibstream-edge",
    ):
        self.url = url
        self.on_tick, self.on_event, self.on_link = on_tick, on_event, on_link
        self.retry = retry
        self.name = name
        self.nc: Any = None
        self.consuming = False
        self.last_error: str | None = None
        self.messages = 0
        self.malformed = 0
        self.outages = 0
        self._task: asyncio.Task | None = None
        self._sub: Any = None
        self._bad_run = False  # inside a run of malformed messages (logged once)
        self._told = False  # the unreachable-at-start line was logged

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected and self.consuming

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ibstream-bus-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.consuming = False  # a close of our own is no outage
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()

    def status(self) -> dict:
        return {
            "url": self.url,
            "connected": self.connected,
            "messages": self.messages,
            "malformed": self.malformed,
            "outages": self.outages,
            "last_error": None if self.connected else self.last_error,
        }

    async def _run(self) -> None:
        """Connect (nats-py tries again and again while NATS is away), then consume."""
        import nats

        while self.nc is None:
            try:
                self.nc = await nats.connect(
                    self.url,
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
        """Subscribe the ordered consumer at the newest run's start (retried while the
        source has not created the JetStream stream yet)."""
        import nats.js.api as api
        import nats.js.errors

        js = self.nc.jetstream()
        told = False
        while self._sub is None:
            try:
                start = await self._start_sequence(js)
                config = api.ConsumerConfig(
                    deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=start,
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
        log.info("bus: following %s on %s from its newest source run", wire.STREAM, self.url)
        self.on_link(True, f"the bus (NATS at {self.url}) is connected")

    async def _start_sequence(self, js: Any) -> int:
        """The stream sequence of the newest source run's first event (1: from the start)."""
        events = f"{wire.EVENTS}.>"
        info = await js.stream_info(wire.STREAM, subjects_filter=events)
        newest: tuple[int, str] | None = None
        for subject in info.state.subjects or {}:
            last = await js.get_last_msg(wire.STREAM, subject)
            if newest is None or last.seq > newest[0]:
                newest = (last.seq, subject)
        if newest is None:
            return max(1, info.state.first_seq)
        first = await js.get_msg(wire.STREAM, seq=1, subject=newest[1], next=True)
        return int(first.seq)

    async def _message(self, msg: Any) -> None:
        self.messages += 1
        subject = msg.subject
        try:
            if subject.startswith(wire.TICKS + "."):
                tick = wire.parse_tick(subject, msg.data)
                self._bad_run = False
                self.on_tick(tick)
                return
            event = orjson.loads(msg.data)
            if not isinstance(event, dict) or not isinstance(event.get("status"), str):
                raise ValueError("an event is an object with a `status`")
            if not isinstance(event.get("server_id"), str):
                raise ValueError("an event names its `server_id`")
        except (ValueError, orjson.JSONDecodeError) as exc:
            self.malformed += 1
            if not self._bad_run:
                self._bad_run = True
                log.warning("bus: skipped a malformed message on %s: %s", subject, exc)
            return
        self._bad_run = False
        self.on_event(event)

    async def _disconnected(self) -> None:
        if self.consuming:
            self.consuming = False
            self.outages += 1
            self.last_error = "NATS connection lost"
            log.warning("bus: NATS at %s lost; reconnecting (clients are told)", self.url)
            self.on_link(False, f"the bus (NATS at {self.url}) is away; reconnecting")

    async def _reconnected(self) -> None:
        if self._sub is not None and not self.consuming:
            self.consuming = True
            log.warning("bus: NATS at %s back; catching up from the stream", self.url)
            self.on_link(True, f"the bus (NATS at {self.url}) is back; catching up")

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
