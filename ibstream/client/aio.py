"""`AsyncClient`: the research client for asyncio code (the sync `Client` drives one too).

    async with AsyncClient("http://127.0.0.1:8001") as client:
        ticks = await client.collect("ES", seconds=10)          # tick frame
        async with client.stream("ES", ("bid_ask", "last")) as stream:
            async for tick in stream: ...

`server` may be a list of URLs: tried in order at connect, and on a lost connection the
next one is used (servers.py). It connects on first use, reconnects by itself with backoff
and resumes every subscription
from its own positions, so ticks are neither lost nor duplicated; reconnects and gaps are
reported through `state`, `reconnects`, `gaps`, `events` and the `on_event` callbacks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ibstream.client import arguments
from ibstream.client.collect import (
    Contracts,
    describe_contracts,
    finish_collection,
    start_collection,
)
from ibstream.client.events import ClientEvent, ClientState, EventLog, Listener
from ibstream.client.lifetime import Held, release_when_garbage, with_room
from ibstream.client.options import TRANSPORTS, Backoff, ClientOptions, env_token
from ibstream.client.progress import Progress, ProgressOption, check_progress
from ibstream.client.servers import Servers, check_servers
from ibstream.client.sinks import BufferSink, CallbackSink, Sink
from ibstream.client.stream import AsyncStream
from ibstream.client.subscription import DEFAULT_TICK_TYPES, Subscription
from ibstream.client.transport import Transport, connection_error, make_transport

DEFAULT_SERVER = "http://127.0.0.1:8001"


class AsyncClient:
    def __init__(
        self,
        server: str | Sequence[str] = DEFAULT_SERVER,
        transport: str = "websocket",
        token: str | None = None,
        *,
        request_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        close_timeout: float = 2.0,
        ping_interval: float = 15.0,
        backoff: Backoff | None = Backoff(),  # noqa: B008 (frozen, shared safely)
        max_queue: int = 10_000,
        on_event: Listener | None = None,
    ):
        self._servers = Servers(check_servers(server))
        self.transport = arguments.choice("transport", transport, TRANSPORTS)
        self.token = env_token(arguments.maybe(arguments.text, "token", token))  # $IBSTREAM_TOKEN
        seconds = {
            "request_timeout": request_timeout,
            "connect_timeout": connect_timeout,
            "close_timeout": close_timeout,
            "ping_interval": ping_interval,
        }
        self.options = ClientOptions(
            **{name: arguments.number(name, value) for name, value in seconds.items()},
            max_queue=arguments.count("max_queue", max_queue),
            backoff=arguments.instance("backoff", backoff, Backoff, "a Backoff(...)"),
        )
        arguments.callback("on_event", on_event)
        self._events = EventLog(f"{self.server} ({transport})", [on_event] if on_event else [])
        self._held = Held(self._events, self._events.name)  # released when this is garbage
        release_when_garbage(self, self._held)
        self._link: Transport | None = None
        self._subs: set[Subscription] = set()
        self._buffers: dict[int, Subscription] = {}
        self._start: asyncio.Lock | None = None
        self._starting: asyncio.Future[None] | None = None  # a transport's start under way
        self._opening = 0  # subscribes and collections under way: busy, never "idle"
        self._released: deque[Subscription] = deque()  # streams let go of (any thread)

    # --- state -------------------------------------------------------------------------
    @property
    def server(self) -> str:
        """The URL of the server in use (the first of `servers` until a failover)."""
        return self._servers.current

    @property
    def servers(self) -> list[str]:
        """Every server URL this client may use, in the order it tries them."""
        return list(self._servers.urls)

    @property
    def state(self) -> str:
        """connecting | connected | reconnecting | closed."""
        return self._events.state.value

    @property
    def reconnects(self) -> int:
        return self._events.reconnects

    @property
    def gaps(self) -> int:
        return self._events.gaps

    @property
    def events(self) -> list[ClientEvent]:
        """The last 1000 events (state changes, gaps, infos, errors), oldest first."""
        return list(self._events.recent)

    def add_listener(self, listener: Callable[[ClientEvent], Any]) -> None:
        """Also call `listener(event)` for every event (on the client's event loop)."""
        self._events.listeners.append(arguments.callback("listener", listener, optional=False))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Return once predicate() holds, re-checked on every event; TimeoutError after."""
        await self._events.wait_for(predicate, timeout)

    # --- lifecycle ---------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._events.state == ClientState.CLOSED

    async def connect(self) -> AsyncClient:
        """Reach the server (done by the first request anyway); StreamConnectionError if not."""
        self._start = self._start or asyncio.Lock()
        async with self._start:
            if self.closed:
                raise connection_error("cannot connect", "this client is closed")
            if self._link is None:
                self._link = await with_room(self, self._start_link)
                self._events.set_state(ClientState.CONNECTED, f"connected to {self.server}")
        return self

    def _idle(self) -> bool:
        """Connected, with no subscription and nothing under way."""
        busy = self._starting is not None or self._opening or self._released or self.subscriptions
        return self._link is not None and not busy and not self.closed

    async def _suspend(self) -> None:
        """Close an idle connection to make room (see lifetime.py); the next call reconnects."""
        link, self._link = self._link, None
        self._held.link = None
        if link is not None:
            self._events.set_state(ClientState.CONNECTING, "idle connection closed for another")
            await link.close()

    async def _start_link(self) -> Transport:
        """A started transport; a close() meanwhile stops the start, and no link survives it."""
        link = make_transport(self.transport, self._servers, self.token, self.options, self._events)
        starting = self._starting = asyncio.ensure_future(link.start())
        try:
            await starting
        except BaseException:
            await link.close()
            task = asyncio.current_task()
            if starting.cancelled() and self.closed and not (task and task.cancelling()):
                raise connection_error("cannot connect", "the client was closed") from None
            raise
        finally:
            self._starting = None
        if self.closed:  # closed just as the start ended
            await link.close()
            raise connection_error("cannot connect", "the client was closed")
        self._held.link, self._held.loop = link, asyncio.get_running_loop()
        return link

    async def close(self) -> None:
        """End every subscription and release every socket and task (within close_timeout)."""
        self._events.set_state(ClientState.CLOSED, "closed by the user")
        starting = self._starting
        if starting is not None:  # connect() under way: it closes what it started and raises
            starting.cancel()
            await asyncio.wait([starting], timeout=self.options.close_timeout)
        for sub in list(self._subs):
            sub.finish()
        self._subs.clear()
        self._buffers.clear()
        link, self._link = self._link, None
        self._held.link = None
        if link is not None:
            await link.close()

    async def __aenter__(self) -> AsyncClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- subscriptions -----------------------------------------------------------------
    def stream(
        self,
        contract: str | int,
        tick_types: str | Iterable[str] = DEFAULT_TICK_TYPES,
        *,
        on_tick: Callable[[dict], Any] | None = None,
        max_queue: int | None = None,
        batch_ms: float | None = None,
        format: str = "json",  # the protocol's word (config.format)
    ) -> AsyncStream:
        """A live subscription: iterate it (`async for tick in ...`) or pass `on_tick`.

        Contract and tick types are checked at once (InvalidMessage, InvalidTickType); the
        subscription opens on `await`, `async with` or the first `async for`. `batch_ms`
        (0 < ms <= 1000) has the server send each stream's ticks batched every `batch_ms`:
        fewer, larger frames for high rates; ticks still arrive one dict each (also with
        `format="arrow"`: see `collect`).
        """
        arguments.callback("on_tick", on_tick)
        queue = arguments.maybe(arguments.count, "max_queue", max_queue) or self.options.max_queue
        return AsyncStream(self, contract, tick_types, on_tick, queue, batch_ms, format)

    async def collect(
        self,
        contract: Contracts,
        tick_types: str | Iterable[str] = DEFAULT_TICK_TYPES,
        seconds: float | None = None,
        limit: int | None = None,
        *,
        progress: ProgressOption = "auto",
        batch_ms: float | None = None,
        format: str = "json",  # the protocol's word (config.format)
    ) -> Any:
        """Ticks as a tick frame (`ibstream.client.frames`), in arrival order.

        `contract` may be a list (one frame holds them all). Ends after `seconds` of wall time
        or `limit` ticks in all, whichever comes first; one of them is required here (the sync
        `Client.collect` also runs until interrupted). `batch_ms` (0 < ms <= 1000): batched
        frames, cheaper at high rates; the same ticks, in the same order. `format="arrow"`
        (with `batch_ms`, over WebSocket, from a replay server): those frames as binary Arrow
        record batches, decoded straight into the frame's columns; the same frame.
        `progress`: "auto" shows a bar in a notebook or terminal only, True always, False never.
        A stream's error ends the collection and is raised with what arrived as `.frame`.
        """
        progress = check_progress(progress)
        if seconds is None and limit is None:
            raise ValueError("give seconds= or limit= (or use stream() for an open-ended feed)")
        self._opening += 1
        try:
            collection = await start_collection(
                self, contract, tick_types, seconds, limit, batch_ms, format
            )
        finally:
            self._opening -= 1
        bar = Progress(progress, total=limit, desc=describe_contracts(collection))
        try:
            await collection.wait(seconds, bar.show if bar.enabled else None)
        finally:
            bar.close(collection.count)
            await finish_collection(self, collection)
        return collection.frame()

    async def history(
        self,
        contract: str | int,
        tick_types: str | Iterable[str] = DEFAULT_TICK_TYPES,
        start: object = None,
        end: object = None,
        *,
        progress: bool | str | None = None,
    ) -> Any:
        """Past ticks of [start, end) as a tick frame (index = receive stamp, so it joins a
        `collect` frame), from the server's store and, for what it lacks, IB's history.

        `start`: a time (ISO-8601, UTC unless an offset is given; a datetime, naive = UTC;
        epoch seconds or ns) or a duration before `end` ("30min"); `end` defaults to now.
        `frame.attrs["history"]`: from_store, from_ib, requests, missing. A partial answer
        warns `HistoryIncompleteWarning` and returns; one with no ticks and a missing part
        raises that part's error (IB's code in `details.ib_code`). `progress`: a tqdm bar
        of the range's seconds (None: where a person watches, once it takes a moment)."""
        from ibstream.client.history import HistoryAnswer, HistoryBar, fetch_history, settle
        from ibstream.client.history_args import check_query

        answer = HistoryAnswer(check_query(contract, tick_types, start, end))
        if self.closed:
            raise connection_error("cannot ask for history", "this client is closed")
        bar = HistoryBar(progress, answer.query)
        try:
            await fetch_history(self.server, self.token, self.options, answer, bar.show)
        finally:
            bar.close(answer)
        return settle(answer)

    async def buffer(
        self,
        contract: str | int,
        tick_types: str | Iterable[str] = DEFAULT_TICK_TYPES,
        *,
        max_ticks: int | None = None,
        max_seconds: float | None = None,
        batch_ms: float | None = None,
    ) -> Any:
        """A live `TickBuffer` (window of `max_ticks` / `max_seconds`) that this client keeps
        filling until it is closed or `unsubscribe(buffer)` is called."""
        from ibstream.client.buffer import TickBuffer

        max_ticks = arguments.maybe(arguments.count, "max_ticks", max_ticks)
        max_seconds = arguments.maybe(arguments.number, "max_seconds", max_seconds)
        buffer = TickBuffer(max_ticks=max_ticks, max_seconds=max_seconds)
        sub = self._new_subscription(contract, tick_types, BufferSink(buffer), batch_ms)
        await self._open(sub)
        buffer.contracts = [dict(sub.contract)] if sub.contract else []
        self._buffers[id(buffer)] = sub
        return buffer

    async def unsubscribe(self, handle: Any) -> None:
        """Stop an `AsyncStream`, a buffer from `buffer()` or a Subscription."""
        if isinstance(handle, AsyncStream):
            await handle.close()
            return
        sub = handle if isinstance(handle, Subscription) else self._buffers.pop(id(handle), None)
        if sub is None:
            raise TypeError(
                "handle must be a stream or buffer this client returned, or a Subscription; "
                f"got {handle!r} ({type(handle).__name__})"
            )
        await self._close_subscription(sub)

    async def contracts(self, symbol: str | int) -> Any:
        """Every contract the server finds for `symbol` ("ES": each listed expiry), as a
        DataFrame: contract_id, symbol, local_symbol, sec_type, exchange, currency,
        min_tick, multiplier, last_trade_date, description."""
        from ibstream.client.contracts import check_symbol, contracts_frame, lookup

        rows = await lookup(self.server, self.token, check_symbol(symbol), self.options)
        return contracts_frame(rows)

    async def ping(self) -> float:
        """Round-trip time to the server in seconds."""
        await self.connect()
        assert self._link is not None
        return await self._link.ping()

    @property
    def subscriptions(self) -> list[Subscription]:
        return [s for s in self._subs if s.active]

    # --- internals shared with the handles and the sync face ------------------------------
    def _new_subscription(
        self,
        contract: object,
        tick_types: Any,
        sink: Sink,
        batch_ms: float | None = None,
        frame_format: str = "json",
    ) -> Subscription:
        types = arguments.tick_types(tick_types)
        return Subscription(contract, types, sink, self._events, batch_ms, frame_format)

    async def _open(self, sub: Subscription) -> None:
        self._opening += 1
        try:
            await self._open_now(sub)
        finally:
            self._opening -= 1

    async def _open_now(self, sub: Subscription) -> None:
        self._drop_released()  # their unsubscribes go first: they free stream slots
        await self.connect()
        assert self._link is not None
        if isinstance(sub.sink, CallbackSink | BufferSink):  # it goes on by itself: so does the
            sub.keeper = self  # client while it runs (see lifetime.py)
        link = self._link
        await with_room(self, lambda: link.open(sub))  # SSE: a response is a connection
        if self.closed:  # closed meanwhile: end it here too
            sub.finish()
            raise connection_error(f"cannot subscribe {sub.spec}", "this client was closed")
        self._subs = {s for s in self._subs if s.active} | {sub}

    def _drop(self, sub: Subscription) -> None:
        """End a subscription now; its unsubscribe goes out without waiting for a reply."""
        self._subs.discard(sub)
        if self._link is not None:
            self._link.drop(sub)
        else:
            sub.finish()

    def _release(self, sub: Subscription) -> None:
        """From any thread (a finaliser): drop `sub` on the loop, before any later request."""
        self._released.append(sub)

    def _drop_released(self) -> None:
        while self._released:
            self._drop(self._released.popleft())

    async def _stream_room(self) -> int | None:
        """Streams that still fit on this client's connection (None: the transport has no
        per-connection limit)."""
        await self.connect()
        assert self._link is not None
        return self._link.stream_room()

    async def _settle(self) -> None:
        if self._link is not None:
            await self._link.settle()

    async def _close_subscription(self, sub: Subscription) -> None:
        self._drop(sub)
        await self._settle()
