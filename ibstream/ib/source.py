"""The IB source: owns the ib_insync connection and the upstream tick-by-tick subscriptions.

Ticks leave here stamped with a strictly increasing nanosecond receive time, in arrival
order per contract. The connection is kept alive with backoff and jitter; after a reconnect
every live subscription is requested again (ib_insync hands out fresh request ids) and the
hub is told through `SourceEvent`s, so clients stay connected through gateway restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from ibstream.errors import (
    IB_ADVISORIES,
    IB_CONNECTIVITY_LOST,
    IB_RESTORED_DATA_KEPT,
    IB_RESTORED_DATA_LOST,
    ErrorCode,
    StreamError,
    from_ib_error,
)
from ibstream.ib import api as ibapi
from ibstream.ib.contracts import contract_info, parse_spec, pick_front
from ibstream.ib.lookup import FARM_OK, GatewayClock, request_details
from ibstream.ib.pacing import Pacer
from ibstream.model import ContractInfo, Tick, TickType

log = logging.getLogger(__name__)
_JITTER = random.Random()  # our own: jitter never touches the global random state


@dataclass
class SourceEvent:
    """A change a client should hear about: connection state, advisories, stream failures."""

    status: str  # ib_disconnected | resumed | ib_advisory | stream_error
    message: str
    key: tuple[int, TickType] | None = None
    error: StreamError | None = None
    details: dict | None = None


class IBSource:
    """ib_insync (or ib_async) connection with shared upstream subscriptions."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4002,
        client_id: int = 1,
        *,
        connect_timeout: float = 4.0,
        request_timeout: float = 10.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        library: str | None = None,
    ):
        self.host, self.port, self.client_id = host, port, client_id
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.lib = ibapi.load(library)
        self.ib = self.lib.IB()
        self.ib.RaiseRequestErrors = False
        ibapi.parse_in_slices(self.ib)
        self.on_tick: Callable[[Tick], None] = lambda tick: None
        self.on_event: Callable[[SourceEvent], None] = lambda event: None
        self.upstream: set[tuple[int, TickType]] = set()
        self.reconnects = 0
        self.last_error: str | None = None
        self._contracts: dict[int, object] = {}  # conId -> the one ib Contract object
        self._infos: dict[int, ContractInfo] = {}
        self._last_ns = 0
        self._clock = GatewayClock(self.ib, request_timeout)
        self.ib_link_lost = False  # TWS is up but lost IB's servers (1100 until 1101/1102)
        self._task: asyncio.Task | None = None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._stopping = False
        self._req_keys: dict[int, tuple[int, TickType]] = {}  # IB request id -> stream key
        self.pacer = Pacer()  # IB paces history per connection: every fetch on it shares one
        self._hook_ticks()
        self.ib.errorEvent += self._on_error
        self.ib.disconnectedEvent += self._lost.set

    # -- connection ---------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.ib.isConnected() and self._connected.is_set()

    @property
    def available(self) -> bool:
        """Connected, and TWS / IB Gateway itself reaches IB (no 1100 outstanding)."""
        return self.connected and not self.ib_link_lost

    async def start(self, wait: float | None = None) -> None:
        """Start the connection loop; with `wait`, return once connected or raise after that long."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ibstream-ib-source")
        if wait is not None:
            await self.wait_connected(wait)

    async def wait_connected(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            raise StreamError(
                ErrorCode.CONNECTION_ERROR,
                f"could not connect to IB at {self.host}:{self.port} within {timeout:g} s "
                f"({self.last_error or 'no answer'}); is TWS / IB Gateway running with the API enabled?",
            ) from None

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.ib.disconnect()

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            self._lost.clear()  # before connecting: a drop right after connect must stay seen
            try:
                await self._connect_once()
            # ValueError / OverflowError: a host or port no socket takes (port 70000)
            except (OSError, TimeoutError, ConnectionError, ValueError, OverflowError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
                self.ib.disconnect()
                delay = min(self.backoff_max, self.backoff_initial * 2**attempt)
                attempt += 1
                log.info("IB connect failed (%s); retry in %.2f s", self.last_error, delay)
                await asyncio.sleep(delay * _JITTER.uniform(0.5, 1.0))  # backoff, not sync
                continue
            attempt = 0
            self.ib_link_lost = False
            self._clock.reset()
            self._connected.set()
            log.info(
                "connected to IB at %s:%s (server version %s)",
                self.host,
                self.port,
                self.ib.client.serverVersion(),
            )
            if self.reconnects:
                self._resubscribe_all("resumed", "IB connection restored; streams resumed")
            await self._lost.wait()
            self._connected.clear()
            if self._stopping:
                return
            self.reconnects += 1
            self.last_error = "connection to IB lost"
            log.warning("IB connection lost; reconnecting")
            self.on_event(SourceEvent("ib_disconnected", "connection to IB lost; reconnecting"))

    async def _connect_once(self) -> None:
        """One connect attempt that fails as soon as the peer closes, not after the timeout."""
        loop = asyncio.get_running_loop()
        closed: asyncio.Future = loop.create_future()

        def on_api_error(msg: str) -> None:
            if not closed.done():
                closed.set_result(msg)

        connect = asyncio.ensure_future(
            self.ib.connectAsync(
                self.host, self.port, clientId=self.client_id, timeout=self.connect_timeout
            )
        )
        self.ib.client.apiError += on_api_error
        try:
            await asyncio.wait({connect, closed}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # stop() cancelled us: never let the handshake finish later
            connect.cancel()
            raise
        finally:
            self.ib.client.apiError -= on_api_error
        if not connect.done():
            connect.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connect
            raise ConnectionError(closed.result())
        connect.result()
        if self._lost.is_set() or not self.ib.isConnected():
            raise ConnectionError("connection dropped right after connecting")

    def _resubscribe_all(self, status: str, message: str) -> None:
        self._req_keys.clear()  # every stream gets a fresh request id: the old ones are dead
        for con_id, tick_type in sorted(self.upstream):
            self._request(con_id, tick_type)
        self.on_event(SourceEvent(status, message, details={"streams": len(self.upstream)}))

    def status(self) -> dict:
        return {
            "connected": self.connected,
            "host": self.host,
            "port": self.port,
            "client_id": self.client_id,
            "library": self.lib.__name__,
            "server_version": self.ib.client.serverVersion() if self.connected else None,
            "ib_link_lost": self.ib_link_lost,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "upstream_subscriptions": [
                {"contract_id": c, "tick_type": t.value} for c, t in sorted(self.upstream)
            ],
        }

    # -- contracts ----------------------------------------------------------------------
    async def resolve(self, spec: str | int) -> ContractInfo:
        """A conId or symbol spec to one contract; CONTRACT_NOT_FOUND if IB has none.

        Of several futures the front month is picked on IB's clock (TWS's date, not the
        host's), so a gateway whose calendar differs from the host's still agrees."""
        fields = parse_spec(spec)
        if "conId" in fields and fields["conId"] in self._infos:
            return self._infos[fields["conId"]]
        details = await self._details(fields, spec)
        today = await self._clock.today() if len(details) > 1 else None
        return self._remember(pick_front(details, today))

    async def qualified(self, contract_id: int) -> tuple[ContractInfo, object]:
        """A conId's contract and the library's qualified Contract object (for history)."""
        info = await self.resolve(contract_id)
        return info, self._contracts[info.contract_id]

    async def search(self, symbol: str) -> list[ContractInfo]:
        """Every listing that matches (not cached: streams resolve through `resolve`)."""
        fields = parse_spec(symbol)
        if fields.get("secType") == "STK":
            fields.pop("exchange", None)  # every listing, not only SMART
        return [contract_info(d) for d in await self._details(fields, symbol)]

    async def _details(self, fields: dict, spec: object) -> list:
        """Ask IB; while it is down, fail at once (CONNECTION_ERROR, recoverable) instead of
        leaving the request to time out: the caller can retry once the source reconnected."""
        if not self.available:
            where = f"TWS / IB Gateway at {self.host}:{self.port}"
            why = (
                f"{where} has lost its connection to IB and the server waits for it to return"
                if self.connected
                else f"the server is not connected to {where} and keeps retrying"
            )
            raise StreamError(
                ErrorCode.CONNECTION_ERROR,
                f"IB is not connected ({why}); cannot look up {spec!r} now: subscribe again "
                "shortly",
                details={"contract": spec, "ib_connected": False},
            )
        address = f"{self.host}:{self.port}"
        return await request_details(self.ib, self.lib, fields, spec, self.request_timeout, address)

    def _remember(self, details: object) -> ContractInfo:
        info = contract_info(details)
        self._infos[info.contract_id] = info
        self._contracts.setdefault(info.contract_id, details.contract)  # type: ignore[attr-defined]
        return info

    # -- subscriptions ------------------------------------------------------------------
    def subscribe(self, contract: ContractInfo, tick_type: TickType) -> None:
        """Add one upstream subscription (the hub calls this once per key)."""
        key = (contract.contract_id, tick_type)
        if key in self.upstream:
            return
        self._contracts.setdefault(
            contract.contract_id,
            self.lib.Contract(conId=contract.contract_id, exchange=contract.exchange),
        )
        self.upstream.add(key)
        if self.connected:
            self._request(*key)

    def unsubscribe(self, contract_id: int, tick_type: TickType) -> None:
        key = (contract_id, tick_type)
        if key not in self.upstream:
            return
        self.upstream.discard(key)
        self._forget(key)
        if self.connected:
            self.ib.cancelTickByTickData(self._contracts[contract_id], tick_type.ib_name)

    def _forget(self, key: tuple[int, TickType]) -> None:
        """Drop a cancelled stream's request ids: late ticks of theirs go nowhere."""
        for req_id in [r for r, k in self._req_keys.items() if k == key]:
            del self._req_keys[req_id]

    def _request(self, con_id: int, tick_type: TickType) -> None:
        ticker = self.ib.reqTickByTickData(self._contracts[con_id], tick_type.ib_name)
        req_id = self.ib.wrapper.ticker2ReqId[tick_type.ib_name].get(ticker)
        if req_id is not None:  # fresh ids after each reconnect; old ones get no data
            self._req_keys[req_id] = (con_id, tick_type)

    # -- events from ib_insync ----------------------------------------------------------
    def _hook_ticks(self) -> None:
        """Take tick-by-tick data straight from the decoder's wrapper calls: the ticks go to
        the hub as they are parsed, without the Ticker bookkeeping (prev/last fields, tick
        objects, pendingTickersEvent) ib_insync would do for data nobody here reads."""
        wrapper = self.ib.wrapper
        wrapper.tickByTickBidAsk = self._bid_ask
        wrapper.tickByTickAllLast = self._all_last
        wrapper.tickByTickMidPoint = self._mid_point

    def _stamp(self) -> int:
        """The receive time: strictly increasing, so it orders ticks across streams."""
        ns = time.time_ns()
        if ns <= self._last_ns:
            ns = self._last_ns + 1
        self._last_ns = ns
        return ns

    def _wanted(self, req_id: int) -> tuple[int, TickType] | None:
        """The stream a request's tick belongs to, while it is subscribed upstream."""
        key = self._req_keys.get(req_id)
        return key if key in self.upstream else None

    def _bid_ask(
        self,
        req_id: int,
        ib_time: int,
        bid: float,
        ask: float,
        bid_size: float,
        ask_size: float,
        _attrib: object = None,
    ) -> None:
        if (key := self._wanted(req_id)) is not None:
            stamp = self._stamp()
            tick = Tick(
                *key,
                stamp,
                bid_price=bid,
                bid_size=bid_size,
                ask_price=ask,
                ask_size=ask_size,
                ib_time=_seconds(ib_time),
            )
            self.on_tick(tick)

    def _all_last(
        self,
        req_id: int,
        _kind: int,
        ib_time: int,
        price: float,
        size: float,
        _attrib: object,
        exchange: str,
        conditions: str,
    ) -> None:
        if (key := self._wanted(req_id)) is not None:
            extra = {"exchange": exchange or None, "conditions": conditions or None}
            stamp, when = self._stamp(), _seconds(ib_time)
            self.on_tick(Tick(*key, stamp, price=price, size=size, **extra, ib_time=when))

    def _mid_point(self, req_id: int, ib_time: int, mid: float) -> None:
        if (key := self._wanted(req_id)) is not None:
            self.on_tick(Tick(*key, self._stamp(), mid_price=mid, ib_time=_seconds(ib_time)))

    def _on_error(self, req_id: int, code: int, text: str, contract: object = None) -> None:
        if code in FARM_OK:
            return
        if code == IB_CONNECTIVITY_LOST:
            self.ib_link_lost = True
            self.on_event(
                SourceEvent("ib_disconnected", f"IB error 1100: {text}", details={"ib_code": code})
            )
        elif code == IB_RESTORED_DATA_LOST:
            self.ib_link_lost = False
            self._resubscribe_all("resumed", f"IB error 1101: {text}; streams requested again")
        elif code == IB_RESTORED_DATA_KEPT:
            self.ib_link_lost = False
            self.on_event(
                SourceEvent("resumed", f"IB error 1102: {text}", details={"ib_code": code})
            )
        else:
            key = self._req_keys.get(req_id)
            if key is None or key not in self.upstream:
                return
            if code in IB_ADVISORIES:
                self.on_event(
                    SourceEvent(
                        "ib_advisory", f"IB error {code}: {text}", key, details={"ib_code": code}
                    )
                )
                return
            self.upstream.discard(key)
            self._forget(key)
            self.ib.cancelTickByTickData(self._contracts[key[0]], key[1].ib_name)
            err = from_ib_error(code, text, contract_id=key[0], tick_type=key[1].value)
            self.on_event(SourceEvent("stream_error", err.message, key, error=err))


def _seconds(ib_time: object) -> int | None:
    """IB's tick time as epoch seconds: the decoder hands the wire's integer (a datetime if
    some library version converted it first); None for anything else."""
    if isinstance(ib_time, int):
        return ib_time if ib_time >= 0 else None
    timestamp = getattr(ib_time, "timestamp", None)
    return int(timestamp()) if callable(timestamp) else None
