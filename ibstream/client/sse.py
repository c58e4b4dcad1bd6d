"""SSE transport: one HTTP response per subscription (`GET /v2/stream/{contract}`).

Events are parsed by httpx-sse. Each subscription runs its own task: when its response
ends or breaks (server shutdown, cut, idle beyond `sse_idle_timeout`) the task reopens it
with backoff and `?resume_from=bid_ask:50,last:3` (the subscription's own positions), on the
next of the client's servers (servers.py: one move per lost server, whichever task sees it). If the
reopened response comes from another server instance (`server_id` of `subscribed`), those
positions were void there: the subscription resets and reopens at once without them.
When one subscription runs out of reconnect attempts the client gives up as a whole, as the
WebSocket transport does: every subscription fails and the state becomes `closed`.

A client with no response open would not notice a dead server (nothing is read), so while
none is up a watch asks `GET /health` every `ping_interval`: a server that is gone or does
not answer within the interval turns the state to `reconnecting` within two intervals, and
back to `connected` once it answers again.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

import httpx
import orjson
from httpx_sse import SSEError, aconnect_sse

from ibstream.client.events import ClientState, ErrorEvent, EventLog
from ibstream.client.http import error_from_response, get, sse_client
from ibstream.client.options import ClientOptions
from ibstream.client.servers import Servers
from ibstream.client.subscription import Subscription
from ibstream.client.transport import (
    connect_in_order,
    connection_error,
    gave_up,
    timeout_error,
)
from ibstream.errors import ErrorCode, StreamError

log = logging.getLogger("ibstream.client")
_BROKEN = (httpx.HTTPError, OSError, SSEError, orjson.JSONDecodeError, TimeoutError)


class _ServerRestarted(Exception):
    """A response resumed on another server instance: reopen it without resume_from."""


class SSETransport:
    name = "sse"

    def __init__(
        self, servers: Servers, token: str | None, options: ClientOptions, events: EventLog
    ):
        self.servers = servers
        self.token = token
        self.options = options
        self.events = events
        self._clients: dict[str, httpx.AsyncClient] = {}  # one per server used
        self._tasks: dict[Subscription, asyncio.Task[None]] = {}
        self._dropped: set[asyncio.Task[None]] = set()
        self._down: set[Subscription] = set()
        self._closing = False
        self._gave_up: StreamError | None = None
        self._unreachable = False  # the watch found the server gone
        self._watch: asyncio.Task[None] | None = None

    @property
    def base(self) -> str:
        """The server in use."""
        return self.servers.current

    def _http(self, base: str) -> httpx.AsyncClient:
        """The HTTP client of server `base` (made on first use)."""
        if base not in self._clients:
            self._clients[base] = sse_client(base, self.token, self.options)
        return self._clients[base]

    async def start(self) -> None:
        """Reach the first of the servers (in order, from the one in use) that answers."""
        await connect_in_order(
            self.servers, lambda: self.ping(self.options.connect_timeout, "connect_timeout")
        )
        self._watch = asyncio.create_task(self._watch_server(), name="ibstream-sse-watch")

    async def _watch_server(self) -> None:
        """While no response is up, check the server every ping_interval (see the module)."""
        interval = self.options.ping_interval
        delays = None
        while not self._closing:
            await asyncio.sleep(interval)  # the ping period, not synchronisation
            if any(sub not in self._down for sub in self._tasks):  # a response watches
                continue
            base = self.base
            try:
                await self.ping(interval, "ping_interval")
            except StreamError as exc:
                self.servers.failed(base)  # the next check (and response) tries the next
                if not self._unreachable:
                    self._unreachable = True
                    delays = self.options.backoff.delays() if self.options.backoff else None
                    self.events.set_state(ClientState.RECONNECTING, exc.message)
                if delays is None or next(delays, None) is None:
                    self._give_up(exc.message)
                    return
                continue
            self._reachable()

    def _reachable(self) -> None:
        """The server answers again (the watch, or a response opened)."""
        if self._unreachable:
            self._unreachable = False
            self.events.reconnects += 1
            self._settle()

    async def ping(self, timeout: float | None = None, setting: str = "request_timeout") -> float:
        """Round trip of GET /health."""
        timeout = timeout or self.options.request_timeout
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await get(self._http(self.base), "/health", timeout, setting)
        if response.status_code not in (200, 503):  # 503: up, but IB is not connected
            raise await error_from_response(response)
        return loop.time() - started

    def stream_room(self) -> int | None:
        return None  # one response per subscription: the per-IP limit applies, not this

    async def open(self, sub: Subscription) -> None:
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._run(sub, opened), name=f"ibstream-sse {sub.spec}")
        self._tasks[sub] = task
        timeout = self.options.request_timeout
        try:
            async with asyncio.timeout(timeout):  # its task ends early when close() stops it
                await asyncio.wait([opened, task], return_when=asyncio.FIRST_COMPLETED)
        except BaseException as exc:
            task.cancel()
            if isinstance(exc, TimeoutError):
                raise timeout_error(f"subscribe {sub.spec}", timeout) from None
            raise
        finally:
            if not opened.done():
                opened.cancel()
        if opened.cancelled():  # its task ended without an answer: closed or given up
            raise self._gave_up or connection_error(
                f"cannot subscribe {sub.spec}", "the client was closed"
            )
        opened.result()  # the typed error of a refused subscription

    def drop(self, sub: Subscription) -> None:
        """End a subscription now; cancelling its task drops its response."""
        sub.finish()
        task = self._tasks.pop(sub, None)
        if task is not None:
            task.cancel()
            self._dropped.add(task)
            task.add_done_callback(self._dropped.discard)

    async def settle(self) -> None:
        if self._dropped:
            await asyncio.wait(list(self._dropped), timeout=self.options.close_timeout)

    async def close(self) -> None:
        self._closing = True
        tasks = list(self._tasks.values())
        if self._watch is not None:
            tasks.append(self._watch)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.options.close_timeout)
        try:
            async with asyncio.timeout(self.options.close_timeout):
                for http in self._clients.values():
                    await http.aclose()
        except TimeoutError:
            log.warning("closing the HTTP client of %s took too long", self.servers.describe())

    async def _run(self, sub: Subscription, opened: asyncio.Future[None]) -> None:
        """Keep one subscription's response open until it ends; fail it on a surprise."""
        try:
            await self._keep_open(sub, opened)
        except Exception as exc:  # a bug must not end a subscription in silence
            log.exception("%s: the subscription task failed", sub.describe())
            error = StreamError(ErrorCode.INTERNAL_ERROR, f"{sub.describe()} failed: {exc}")
            if not opened.done():
                opened.set_exception(error)
            elif sub.active:
                sub.fail(error)
                self.events.emit(ErrorEvent(error, sub.contract_id))
        finally:
            self._tasks.pop(sub, None)
            if sub in self._down:
                self._down.discard(sub)
                self._settle()

    async def _keep_open(self, sub: Subscription, opened: asyncio.Future[None]) -> None:
        delays = None
        while sub.active and not self._closing:
            base = self.base
            try:
                await self._response(sub, opened, base)
                why = "the server ended the response"
            except _ServerRestarted:
                continue
            except StreamError as exc:
                if not opened.done():
                    opened.set_exception(exc)
                    return
                if not exc.recoverable:
                    self.events.emit(ErrorEvent(exc, sub.contract_id))
                    sub.fail(exc)
                    return
                why = exc.message
            except _BROKEN as exc:
                if not opened.done():
                    opened.set_exception(connection_error(f"cannot open {sub.spec}", exc))
                    return
                why = f"response broke ({type(exc).__name__}: {exc})"
            if not sub.active or self._closing:
                return
            if sub not in self._down:
                delays = None
            self.servers.failed(base)  # reopened on the next server
            self._lost(sub, why)
            delays = delays or (self.options.backoff.delays() if self.options.backoff else None)
            delay = next(delays, None) if delays is not None else None
            if delay is None:
                self._give_up(why)
                return
            await asyncio.sleep(delay)  # backoff, not synchronisation

    async def _response(self, sub: Subscription, opened: asyncio.Future[None], base: str) -> None:
        params = {"tick_types": ",".join(sub.tick_types)}
        if sub.positions:
            params["resume_from"] = ",".join(f"{t}:{n}" for t, n in sub.positions.items())
        if sub.batch_ms is not None:
            params["batch_ms"] = f"{sub.batch_ms:g}"
        if sub.format != "json":  # the server refuses it (SSE is text): its error is raised
            params["format"] = sub.format
        path = "/v2/stream/" + quote(str(sub.target), safe="")
        async with asyncio.timeout(self.options.request_timeout) as deadline:
            async with aconnect_sse(self._http(base), "GET", path, params=params) as source:
                if source.response.status_code != 200:
                    raise await error_from_response(source.response)
                async for event in source.aiter_sse():
                    if not event.data:
                        continue
                    msg = orjson.loads(event.data)
                    if msg.get("type") == "subscribed":
                        data = msg.get("data") or {}
                        if sub.check_server(data.get("server_id")) and "resume_from" in params:
                            raise _ServerRestarted
                        deadline.reschedule(None)  # open: from now on only idle reads time out
                        sub.bind(data)
                        if not opened.done():
                            opened.set_result(None)
                        self._up(sub)
                        continue
                    sub.on_message(msg)
                    if not sub.active:
                        return

    def _give_up(self, why: str) -> None:
        """Out of reconnect attempts: fail every subscription and end as `closed`."""
        error = self._gave_up = gave_up(self.servers, why, self.base)
        self._closing = True
        for sub, task in list(self._tasks.items()):
            sub.fail(error)
            if task is not asyncio.current_task():
                task.cancel()
        self.events.emit(ErrorEvent(error))
        self.events.set_state(ClientState.CLOSED, "gave up reconnecting")

    def _lost(self, sub: Subscription, why: str) -> None:
        if sub in self._down:
            log.info("%s: reopening %s failed: %s", self.base, sub.describe(), why)
            return
        self._down.add(sub)
        self.events.set_state(ClientState.RECONNECTING, f"{sub.describe()}: {why}")

    def _up(self, sub: Subscription) -> None:
        if sub in self._down:
            self._down.discard(sub)
            self._unreachable = False
            self.events.reconnects += 1
            self._settle()
        else:
            self._reachable()

    def _settle(self) -> None:
        if not self._down and not self._closing and not self._unreachable:
            self.events.set_state(ClientState.CONNECTED, f"every stream of {self.base} is open")
