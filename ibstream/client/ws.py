"""WebSocket transport: one connection carries every subscription of a client.

When the connection goes (cut, SLOW_CONSUMER then 1008, server shutdown 1001, server killed),
a supervisor reconnects with backoff (each attempt to the next of the client's servers, see
servers.py) and resubscribes every subscription with `resume_from` = its own positions,
unless the greeting shows another server instance (`server_id`): then those positions mean
nothing there and every subscription starts afresh (a `Gap` each).
The reader (`ws_link.Link`) only parses and hands messages on.

Unsubscribes are sent without waiting for their replies, in order, before any later
request: the server handles a connection's requests in order, so a subscribe that follows
a dropped stream never counts it against the stream limit, and a stalled link never makes
closing a stream wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from ibstream.client.events import ClientState, ErrorEvent, EventLog, Info
from ibstream.client.options import ClientOptions, auth_headers, ws_url
from ibstream.client.servers import Servers
from ibstream.client.subscription import Subscription
from ibstream.client.transport import (
    connect_in_order,
    connection_error,
    gave_up,
    timeout_error,
)
from ibstream.client.ws_link import Link, LinkLost, link_lost
from ibstream.errors import ErrorCode, StreamError, error_from_body
from ibstream.model import iso_timestamp

log = logging.getLogger("ibstream.client")
_LINK_TROUBLE = (ErrorCode.CONNECTION_ERROR, ErrorCode.STREAM_TIMEOUT)


class WebSocketTransport:
    name = "websocket"

    def __init__(
        self, servers: Servers, token: str | None, options: ClientOptions, events: EventLog
    ):
        self.servers = servers
        self.headers = auth_headers(token)  # the token goes in a header: a URL lands in logs
        self.options = options
        self.events = events
        self._link: Link | None = None
        self._up = asyncio.Event()  # set while a link is up
        self._subs: dict[Subscription, Link] = {}  # -> the link it is subscribed on
        self._streams: dict[str, Subscription] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._unsent: deque[str] = deque()  # stream ids to unsubscribe on the current link
        self._closing = False
        self._fatal: StreamError | None = None  # why reconnecting stopped, if not the link
        self._base = servers.current

    @property
    def url(self) -> str:
        """The WebSocket URL of the server in use."""
        return ws_url(self.servers.current)

    async def start(self) -> None:
        """Connect to the first of the servers (in order, from the one in use) that answers."""
        await connect_in_order(self.servers, self._connect)
        self._supervisor = asyncio.create_task(self._supervise(), name="ibstream-ws-supervisor")

    async def _connect(self) -> None:
        link = await Link.open(
            self.url, self.headers, self.options, self._on_message, self._on_arrow
        )
        self._base = self.servers.current  # the server this link is on
        server_id = (link.greeting.get("data") or {}).get("server_id")
        for sub in self._subs:  # before anything is resubscribed with stale positions
            sub.check_server(server_id)
        self._unsent.clear()  # ids of the old connection: the server has ended those streams
        self._link = link
        self._up.set()

    def _on_message(self, msg: dict) -> None:
        sub = self._streams.get(msg.get("stream_id") or "")
        kind, data = msg.get("type"), msg.get("data") or {}
        if kind == "ticks" and sub is None:
            self._on_frame(data.get("ticks") or ())
        elif sub is not None:
            sub.on_message(msg)
            if not sub.active:
                self._forget(sub, unsubscribe=True)
        elif kind == "subscribed":  # its requester gave up: leave no stream running
            self._unsubscribe_later([s["stream_id"] for s in data.get("streams", ())])
        elif kind == "error" and not msg.get("stream_id") and _reply_id(msg) is None:
            # SLOW_CONSUMER before 1008 ... (an error reply is its requester's business)
            self.events.emit(ErrorEvent(error_from_body(data)))
        elif kind == "info" and not msg.get("stream_id"):
            status, text = data.get("status", ""), data.get("message", "")
            self.events.emit(Info(None, None, status, text, data.get("details") or {}))

    def _on_frame(self, items: list[dict]) -> None:
        """A `ticks` frame: its items in arrival order, each run of one subscription's
        items handed over together (ticks of streams no longer bound are dropped)."""
        streams = self._streams
        run: list[dict] = []
        owner = None
        for item in items:
            sub = streams.get(item.get("stream_id", ""))
            if sub is not owner:
                if owner is not None:
                    self._deliver(owner, run)
                owner, run = sub, []
            run.append(item)
        if owner is not None:
            self._deliver(owner, run)

    def _on_arrow(self, payload: bytes) -> None:
        """An Arrow frame: decoded once, each run of one subscription's rows handed over
        together, in arrival order (rows of streams no longer bound are dropped)."""
        from ibstream.client.arrow_frames import split_frame  # pyarrow only when used

        for sub, table in split_frame(payload, self._streams.get):
            sub.on_frame(table)
            if not sub.active:
                self._forget(sub, unsubscribe=True)

    def _deliver(self, sub: Subscription, items: list[dict]) -> None:
        sub.on_items(items)
        if not sub.active:
            self._forget(sub, unsubscribe=True)

    def _bind(self, sub: Subscription, link: Link, data: dict) -> None:
        for stream_id in sub.stream_ids:
            self._streams.pop(stream_id, None)
        stream_ids = sub.bind(data)
        if not sub.active:  # dropped while its subscribe was under way
            self._unsubscribe_later(stream_ids)
            return
        for stream_id in stream_ids:
            self._streams[stream_id] = sub
        self._subs[sub] = link

    def _forget(self, sub: Subscription, *, unsubscribe: bool) -> list[str]:
        self._subs.pop(sub, None)
        ids = [sid for sid, owner in self._streams.items() if owner is sub]
        for stream_id in ids:
            del self._streams[stream_id]
        if unsubscribe:
            self._unsubscribe_later(ids)
        return ids

    def _unsubscribe_later(self, stream_ids: list[str]) -> None:
        """Queue unsubscribes; they go out before any later request (see `_flush`)."""
        if stream_ids and self._link is not None and self._link.up and not self._closing:
            self._unsent.extend(stream_ids)
            task = asyncio.create_task(self._flush())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _flush(self) -> None:
        """Send the queued unsubscribes, in order, without waiting for their replies."""
        while self._unsent and self._link is not None and self._link.up:
            stream_id = self._unsent.popleft()
            with contextlib.suppress(StreamError):
                await self._link.send("unsubscribe", {"stream_id": stream_id})

    async def _subscribe(self, sub: Subscription) -> None:
        await self._flush()
        link = self._link
        if link is None:
            raise link_lost(f"cannot subscribe {sub.spec}", "not connected")
        data: dict = {"contract_id": sub.target, "tick_types": sub.tick_types}
        config: dict = {
            "resume_from": sub.resume_from() or None,
            "batch_ms": sub.batch_ms,
            "format": "arrow" if sub.format == "arrow" else None,
        }
        if any(value is not None for value in config.values()):
            data["config"] = {k: v for k, v in config.items() if v is not None}
        bind = lambda reply: self._bind(sub, link, reply)  # noqa: E731
        await link.request("subscribe", data, self.options.request_timeout, bind)

    async def open(self, sub: Subscription) -> None:
        timeout = self.options.request_timeout
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._check_open(sub)
                    await self._up.wait()
                    self._check_open(sub)  # woken by close() or by giving up
                    try:
                        await self._subscribe(sub)
                        return
                    except LinkLost:  # the link dropped mid-request: next link (a server's
                        if self._closing:  # own CONNECTION_ERROR, e.g. IB down, is raised)
                            raise
                        if self._link is None or not self._link.up:
                            self._up.clear()  # the supervisor sets it again once reconnected
        except BaseException as exc:
            self._forget(sub, unsubscribe=True)  # a reply may have bound it just too late
            if isinstance(exc, TimeoutError):
                state = self.events.state.value
                raise timeout_error(f"subscribe {sub.spec} ({state})", timeout) from None
            raise

    def _check_open(self, sub: Subscription) -> None:
        if self._closing or self.events.state == ClientState.CLOSED:
            raise connection_error(f"cannot subscribe {sub.spec}", "the client was closed")

    def drop(self, sub: Subscription) -> None:
        """End a subscription now; its unsubscribe goes out before any later request."""
        sub.finish()
        self._forget(sub, unsubscribe=True)

    async def settle(self) -> None:
        """Send the queued unsubscribes (within close_timeout: a stalled link may not take them)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.options.close_timeout):
                await self._flush()

    def stream_room(self) -> int | None:
        """The greeting's max_streams_per_connection less the streams open on this link."""
        greeting = self._link.greeting.get("data") if self._link is not None else None
        limit = ((greeting or {}).get("capabilities") or {}).get("max_streams_per_connection")
        return limit - len(self._streams) if isinstance(limit, int) else None

    async def ping(self) -> float:
        link = self._link
        if link is None:
            raise connection_error("cannot ping", "not connected")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await link.request("ping", {"timestamp": iso_timestamp()}, self.options.request_timeout)
        return loop.time() - started

    async def _supervise(self) -> None:
        while self._link is not None:
            why = await self._link.reader
            self._up.clear()
            if self._closing:
                return
            self.events.set_state(ClientState.RECONNECTING, why)
            self.servers.failed(self._base)  # the next server is tried first
            if not await self._reconnect():
                self._give_up(why)
                return
            self.events.reconnects += 1
            await self._restore()
            if self._link.up:
                self.events.set_state(ClientState.CONNECTED, f"reconnected to {self.url}")

    async def _reconnect(self) -> bool:
        backoff = self.options.backoff
        if backoff is None:
            return False
        for attempt, delay in enumerate(backoff.delays(), 1):
            await asyncio.sleep(delay)  # backoff, not synchronisation
            url = self.servers.current
            try:
                await self._connect()
                return True
            except StreamError as exc:
                if not exc.recoverable:  # AUTH_REQUIRED ...: retrying cannot help
                    self._fatal = exc
                    return False
                log.info("reconnect attempt %d to %s failed: %s", attempt, url, exc.message)
                self.servers.failed(url)  # the next attempt goes to the next server
        return False

    async def _restore(self) -> None:
        """Resubscribe everything not yet subscribed on this link, from its positions."""
        link = self._link
        for sub in list(self._subs):
            if not sub.active or self._subs.get(sub) is link:
                continue
            try:
                await self._subscribe(sub)
            except StreamError as exc:
                if exc.code in _LINK_TROUBLE:  # down, or up but not answering: start over
                    if link is not None:
                        await link.abort(self.options.close_timeout)
                    return
                self._forget(sub, unsubscribe=False)
                self.events.emit(ErrorEvent(exc, sub.contract_id))
                sub.fail(exc)

    def _give_up(self, why: str) -> None:
        error = self._fatal or gave_up(self.servers, why, self.url)
        for sub in list(self._subs):
            self._forget(sub, unsubscribe=False)
            sub.fail(error)
        self.events.emit(ErrorEvent(error))
        self.events.set_state(ClientState.CLOSED, "gave up reconnecting")
        self._up.set()  # wake subscribes waiting for a link: there will be none

    async def close(self) -> None:
        self._closing = True
        self._up.set()  # wake subscribes waiting for a link: they fail as closed
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.wait([self._supervisor], timeout=self.options.close_timeout)
        if self._link is not None:
            await self._link.close(self.options.close_timeout)
        for sub in list(self._subs):
            self._forget(sub, unsubscribe=False)


def _reply_id(msg: dict) -> object:
    return msg.get("id", (msg.get("data") or {}).get("request_id"))
