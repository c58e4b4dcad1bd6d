"""`BusSource`: an edge server's source. It has no IB connection: the hub and the status
endpoints ask it what they ask `IBSource`, and it answers from the bus.

Ticks and events come from one ordered consumer (`feed.py`) and go to the hub as the
source numbered and encoded them (`EdgeHub.publish_entry`), into kept channels whether or
not a client holds the stream yet, so a client failing over from another edge (or from the
source) finds its resume window here; the hub's `server_id` is the source's. Contract lookup
goes to the source (`asks.py`, resolved contracts cached); a stream a client subscribes is
held at the source (`edge_holds.py`) before it is attached, so a source that does not answer
fails the subscribe with a recoverable CONNECTION_ERROR.

A restarted source (`source_started` with a new id) is followed: clients get `complete`
(server_shutdown) and a close, so they reconnect, see the new `server_id` and report one
`server_restarted` gap per stream; the edge's rings and sequences start over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ibstream.bus import edge_events, wire
from ibstream.bus.asks import SourceAsks
from ibstream.bus.edge_holds import Holds
from ibstream.bus.feed import BusFeed
from ibstream.errors import ErrorCode, StreamError
from ibstream.ib.source import SourceEvent
from ibstream.model import ContractInfo, Tick, TickType
from ibstream.protocol.changes import Changes
from ibstream.server.hub import StreamKey

if TYPE_CHECKING:
    from ibstream.bus.edge_hub import EdgeHub

log = logging.getLogger(__name__)
RESOLVED_SECONDS = 3600.0
RESOLVED_KEPT = 1024


class BusSource:
    """What `IBSource` is to the hub, over NATS (see the module's docstring)."""

    def __init__(
        self,
        url: str,
        *,
        lease: float = 30.0,
        request_timeout: float = 5.0,
        catch_up: float = 600.0,
    ):
        self.url = url
        self.on_tick: Callable[[Tick], None] = lambda tick: None  # the hub sets these; the
        self.on_event: Callable[[SourceEvent], None] = lambda event: None  # bus feeds it
        self.on_restart: Callable[[str, str], None] = lambda old, new: None
        self.hub: EdgeHub | None = None
        self.feed = BusFeed(url, self._tick, self._event, self._link, catch_up=catch_up)
        self.asks = SourceAsks(None, request_timeout)
        self.holds = Holds(self.asks, lease)
        self.contracts: dict[int, ContractInfo] = {}
        # spec -> (when, contract): looked up again after RESOLVED_SECONDS (a front month
        # rolls) or when the source restarts; at most RESOLVED_KEPT specs, oldest out first
        self._resolved: dict[str | int, tuple[float, ContractInfo]] = {}
        self.source_ib_up = True
        self.following: str | None = None  # the source run (server_id) the hub numbers as
        self.skipped = 0  # ticks of another source run than the one followed
        self._arrivals = Changes()
        self._waiting = 0
        self.linked = asyncio.Event()  # set once the bus was followed (start-up waits on it)

    # -- what the hub and the status endpoints ask ----------------------------------------
    @property
    def connected(self) -> bool:
        return self.feed.connected

    @property
    def available(self) -> bool:
        return self.feed.connected and self.source_ib_up

    @property
    def upstream(self) -> set[tuple[int, TickType]]:
        return set(self.holds.keys)

    async def start(self, hub: EdgeHub) -> None:
        self.hub = hub
        self.feed.start()

    async def stop(self) -> None:
        if self.feed.nc is not None and self.feed.nc.is_connected:
            await self.holds.stop()
        await self.feed.stop()

    def status(self) -> dict:
        return {
            "connected": self.available,
            "host": self.url,
            "port": 0,
            "client_id": 0,
            "library": "bus",
            "ib_link_lost": False,
            "reconnects": self.feed.outages,
            "last_error": self.feed.status()["last_error"]
            or (None if self.source_ib_up else "the source lost IB (it is reconnecting)"),
            "upstream_subscriptions": [
                {"contract_id": c, "tick_type": t.value} for c, t in sorted(self.holds.keys)
            ],
        }

    def bus_status(self) -> dict:
        """The `bus` section of `/health` (degraded while the bus is not followed)."""
        return {
            **self.feed.status(),
            "role": "edge",
            "source_server_id": self.following,
            "source_ib_connected": self.source_ib_up,
            "holder": self.holds.holder,
            "holds": len(self.holds.keys),
            "skipped_ticks": self.skipped,
        }

    async def resolve(self, spec: str | int) -> ContractInfo:
        kept = self._resolved.get(spec)
        if kept is not None and time.monotonic() - kept[0] < RESOLVED_SECONDS:
            return kept[1]
        self.asks.nc = self.feed.nc
        found = await self.asks.resolve(spec)
        self._resolved.pop(spec, None)
        if len(self._resolved) >= RESOLVED_KEPT:
            del self._resolved[next(iter(self._resolved))]
        self._resolved[spec] = (time.monotonic(), found)
        self.contracts.setdefault(found.contract_id, found)
        return found

    async def qualified(self, contract_id: int) -> tuple[ContractInfo, object]:
        """History from IB (`/v2/history`) needs the IB connection an edge does not have."""
        raise StreamError(
            ErrorCode.CONNECTION_ERROR,
            "an edge server (--from-bus) has no IB connection for history: ask the source "
            "server (`ibstream serve --bus`) or read a recording (`ibstream record --from-bus`)",
            details={"contract_id": contract_id},
        )

    async def search(self, symbol: str) -> list[ContractInfo]:
        self.asks.nc = self.feed.nc
        return await self.asks.search(symbol)

    async def prepare(self, contract: ContractInfo, tick_types: list[TickType]) -> None:
        """Hold the streams at the source before they are attached, then wait (briefly)
        until this edge's copy of the bus has caught up with where the source stands, so
        the subscribe's `start_sequence` and its resume window are the source's."""
        self.asks.nc = self.feed.nc
        for tick_type in tick_types:
            key = StreamKey(contract.contract_id, tick_type)
            server_id, last = await self.holds.hold(key)
            if self.following is None:  # nothing of the run read yet (a quiet bus): the
                self._adopt(server_id)  # source says which run it is
            if server_id != self.following:
                raise StreamError(
                    ErrorCode.CONNECTION_ERROR,
                    f"this edge is still catching up with the source's run {server_id} on the "
                    "bus; retry in a moment",
                )
            await self._caught_up(key, contract, last)

    def subscribe(self, contract: ContractInfo, tick_type: TickType) -> None:
        self.holds.add((contract.contract_id, tick_type))

    def unsubscribe(self, contract_id: int, tick_type: TickType) -> None:
        self.holds.remove((contract_id, tick_type))

    async def _caught_up(self, key: StreamKey, contract: ContractInfo, last: int) -> None:
        hub = self.hub
        assert hub is not None
        if hub.last_sequence(*key) >= last:
            return
        self._waiting += 1
        try:
            await self._arrivals.wait_for(
                lambda: hub.last_sequence(*key) >= last, self.asks.timeout
            )
        except TimeoutError:  # the bus lags far behind: start from the source's position
            log.warning("bus: %s %s not caught up to sequence %d; starting there", *key, last)
            hub.open_kept(key, contract, last, reopened=False)
        finally:
            self._waiting -= 1

    # -- what the bus brings --------------------------------------------------------------
    def _follows(self, server_id: str) -> bool:
        """True for the run being followed; the first run seen is adopted."""
        if self.following is None:
            self._adopt(server_id)
        return server_id == self.following

    def _adopt(self, server_id: str) -> None:
        old, self.following = self.following, server_id
        self.source_ib_up = True
        if self.hub is None or self.hub.server_id == server_id:
            return
        if old is not None:
            log.warning(
                "bus: the source restarted (run %s -> %s); clients reconnect", old, server_id
            )
            self.holds.forget()
            self._resolved.clear()
            self.on_restart(old, server_id)  # clients told and closed before the renumbering
        self.hub.renumber(server_id)

    def _tick(self, tick: wire.BusTick) -> None:
        if not self._follows(tick.server_id):
            self.skipped += 1
            return
        key = StreamKey(tick.contract_id, tick.tick_type)
        contract = self.contracts.get(tick.contract_id) or ContractInfo(
            tick.contract_id, str(tick.contract_id), "", "", ""
        )
        assert self.hub is not None
        self.hub.publish_entry(key, contract, tick.entry)
        if self._waiting:
            self._arrivals.notify()

    def _event(self, event: dict) -> None:
        status, server_id = event["status"], event["server_id"]
        if status == "source_started":
            if server_id != self.following:
                self._adopt(server_id)
            return
        if not self._follows(server_id):
            return
        try:
            if status == "stream_opened":
                self._opened(*edge_events.opened(event))
            elif status == "stream_error":
                key, error = edge_events.failure(event)
                self.holds.keys.discard(key)
                self.on_event(SourceEvent("stream_error", error.message, key, error=error))
            elif (told := edge_events.told(event)) is not None:
                if status in ("ib_disconnected", "resumed"):
                    self.source_ib_up = status == "resumed"
                self.on_event(told)
            elif status == "bus_overflow":  # ticks that never reached the bus: holes
                log.warning("bus: the source says %s", event.get("message"))
        except ValueError as exc:
            log.warning("bus: skipped a malformed %s event: %s", status, exc)

    def _opened(self, key: StreamKey, contract: ContractInfo, last: int) -> None:
        self.contracts[key.contract_id] = contract
        assert self.hub is not None
        self.hub.open_kept(key, contract, last)
        if self._waiting:
            self._arrivals.notify()

    def _link(self, up: bool, message: str) -> None:
        """NATS lost or back: every client stream hears it (`info`)."""
        self.asks.nc = self.feed.nc
        if up:
            self.linked.set()
        if self.hub is not None:
            self.hub.broadcast("bus_resumed" if up else "bus_disconnected", message)


class EdgeBus:
    """An edge's bus as the server context shows it (`ctx.bus`: `/health`); the source owns
    the connection and stops it."""

    def __init__(self, source: BusSource):
        self.source = source

    def status(self) -> dict:
        return self.source.bus_status()

    async def stop(self) -> None:
        pass
