"""`Client`: the sync face, for scripts and Jupyter cells (even while the kernel's loop runs).

    with Client("http://127.0.0.1:8001") as client:
        ticks = client.collect("ES", seconds=10)
        for tick in client.stream("ES", "last"): ...

It runs an `AsyncClient` on the process's private loop thread (`loop.py`); each call waits
for its result with a deadline. Iterators read from a bounded thread-safe inbox; `on_tick`
and `on_event` callbacks run on the loop thread (keep them quick; do not call the Client or
wait on a stream's `get()` from inside them: both are refused there, `get(timeout=0)` is not). A blocking call holds the calling thread: when the server itself runs in
the same notebook kernel's loop, use `AsyncClient` there (or `asyncio.to_thread`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ibstream.client import arguments, loop
from ibstream.client.aio import DEFAULT_SERVER, AsyncClient
from ibstream.client.collect import (
    PROGRESS_EVERY,
    Contracts,
    describe_contracts,
    finish_collection,
    start_collection,
)
from ibstream.client.events import ClientEvent, Listener
from ibstream.client.options import Backoff
from ibstream.client.progress import Progress, ProgressOption, check_progress
from ibstream.client.sinks import CallbackSink, Sink, ThreadInbox
from ibstream.client.stream import SubscriptionView, release_when_dropped
from ibstream.client.subscription import DEFAULT_TICK_TYPES, Subscription
from ibstream.client.transport import connection_error

log = logging.getLogger("ibstream.client")


class SyncStream(SubscriptionView):
    """A live subscription: `for tick in stream` (ticks are the wire's tick `data` dicts),
    `stream.get(timeout)`, `stream.close()` or `with client.stream(...) as stream:`. An
    iterated stream is also unsubscribed once its handle is garbage (see `stream.py`)."""

    def __init__(self, client: Client, sub: Subscription, inbox: ThreadInbox | None):
        self._client = client
        self._sub = sub
        self._inbox = inbox
        if inbox is not None:
            self._finalizer = release_when_dropped(self, client._async, sub, loop.client_loop())

    def __iter__(self) -> SyncStream:
        return self

    def __next__(self) -> dict:
        return self.get()

    def get(self, timeout: float | None = None) -> dict:
        """The next tick (TimeoutError if none within `timeout`, StopIteration once closed)."""
        if self._inbox is None:
            raise TypeError("this stream delivers its ticks to on_tick; it is not iterable")
        if timeout is None or timeout > 0:  # waiting there would stop the ticks it waits for
            loop.refuse_on_loop_thread("SyncStream.get")
        return self._inbox.get(timeout)

    def close(self) -> None:
        """Unsubscribe (within close_timeout); iteration ends after what is still queued."""
        if self._finalizer is not None:
            self._finalizer.detach()
        self._client._call(self._client._async._close_subscription(self._sub), "close stream")

    def __enter__(self) -> SyncStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    """Same arguments and behaviour as `AsyncClient`, with blocking methods."""

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
        self._async = AsyncClient(
            server,
            transport,
            token,
            request_timeout=request_timeout,
            connect_timeout=connect_timeout,
            close_timeout=close_timeout,
            ping_interval=ping_interval,
            backoff=backoff,
            max_queue=max_queue,
            on_event=on_event,
        )
        # Every coroutine bounds itself; this outer deadline only guards against surprises.
        self._deadline = connect_timeout + 2 * request_timeout + close_timeout + 5

    def _call(self, coro: Any, what: str) -> Any:
        return loop.call(coro, self._deadline, what)

    @property
    def server(self) -> str:
        """The URL of the server in use (see `AsyncClient.server`)."""
        return self._async.server

    @property
    def servers(self) -> list[str]:
        """Every server URL this client may use, in order."""
        return self._async.servers

    @property
    def transport(self) -> str:
        """ "websocket" or "sse"."""
        return self._async.transport

    @property
    def state(self) -> str:
        """connecting | connected | reconnecting | closed."""
        return self._async.state

    @property
    def reconnects(self) -> int:
        return self._async.reconnects

    @property
    def gaps(self) -> int:
        return self._async.gaps

    @property
    def events(self) -> list[ClientEvent]:
        """The last 1000 events (state changes, gaps, infos, errors), oldest first."""
        return self._snapshot(lambda: self._async.events)

    @property
    def subscriptions(self) -> list[Subscription]:
        """Open subscriptions (streams, buffers, collections under way)."""
        return self._snapshot(lambda: self._async.subscriptions)

    def _snapshot(self, read: Callable[[], list]) -> list:
        for _ in range(10):  # the loop thread may change the container meanwhile
            try:
                return read()
            except RuntimeError:
                continue
        return self._call(_read(read), "snapshot")

    def add_listener(self, listener: Callable[[ClientEvent], Any]) -> None:
        self._async.add_listener(listener)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Block until predicate() holds (checked on the loop thread at every event)."""
        loop.call(self._async.wait_for(predicate, timeout), timeout + 5, "wait_for")

    def connect(self) -> Client:
        self._call(self._async.connect(), "connect")
        return self

    def close(self) -> None:
        self._call(self._async.close(), "close")

    def __enter__(self) -> Client:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stream(
        self,
        contract: str | int,
        tick_types: str | Iterable[str] = DEFAULT_TICK_TYPES,
        *,
        on_tick: Callable[[dict], Any] | None = None,
        max_queue: int | None = None,
        batch_ms: float | None = None,
        format: str = "json",  # the protocol's word (config.format)
    ) -> SyncStream:
        """Subscribe now; iterate the result, or pass `on_tick` (runs on the loop thread).
        `batch_ms`, `format`: see `AsyncClient.stream`."""
        arguments.callback("on_tick", on_tick)
        max_queue = arguments.maybe(arguments.count, "max_queue", max_queue)
        inbox = None if on_tick else ThreadInbox(max_queue or self._async.options.max_queue)
        sink: Sink = CallbackSink(on_tick) if on_tick else inbox  # type: ignore[assignment]
        sub = self._async._new_subscription(contract, tick_types, sink, batch_ms, format)
        self._call(self._async._open(sub), "stream")
        return SyncStream(self, sub, inbox)

    def collect(
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
        """Ticks as a tick frame, after `seconds` or `limit` ticks in all; with neither, until
        interrupted (Ctrl-C, or the stop button in Jupyter), returning what arrived.
        `progress`, `batch_ms`, `format` and errors (`.frame`): see `AsyncClient.collect`."""
        progress = check_progress(progress)
        start = start_collection(
            self._async, contract, tick_types, seconds, limit, batch_ms, format
        )
        collection = self._call(start, "collect")
        bar = Progress(progress, total=limit, desc=describe_contracts(collection))
        waiting = loop.submit(collection.wait(seconds))
        try:
            while not waiting.done():
                try:
                    with contextlib.suppress(concurrent.futures.TimeoutError):
                        waiting.result(PROGRESS_EVERY)
                    bar.show(collection.count)
                except KeyboardInterrupt:  # stop collecting, keep what arrived
                    loop.client_loop().call_soon_threadsafe(collection.stop)
            waiting.result()
        finally:
            bar.close(collection.count)
            self._finish(collection)
        return collection.frame()

    def _finish(self, collection: Any) -> None:
        """Stop a collection's streams (bounded by close_timeout); nothing here, not even
        Ctrl-C, may cost the user the frame that arrived."""
        finishing = loop.submit(finish_collection(self._async, collection))
        try:
            finishing.result(self._async.options.close_timeout + 5)
        except (Exception, KeyboardInterrupt) as exc:  # it goes on on the loop thread
            log.warning("collect: stopping the streams did not finish (%r); keeping the frame", exc)

    def history(
        self,
        contract: str | int,
        tick_types: str | Iterable[str] = DEFAULT_TICK_TYPES,
        start: object = None,
        end: object = None,
        *,
        progress: bool | str | None = None,
    ) -> Any:
        """Past ticks of [start, end) as a tick frame; see `AsyncClient.history`. Ctrl-C
        stops the request."""
        from ibstream.client.history import HistoryAnswer, HistoryBar, fetch_history, settle
        from ibstream.client.history_args import check_query

        answer = HistoryAnswer(check_query(contract, tick_types, start, end))
        loop.refuse_on_loop_thread("Client.history")
        if self._async.closed:
            raise connection_error("cannot ask for history", "this client is closed")
        bar = HistoryBar(progress, answer.query)
        options = self._async.options
        waiting = loop.submit(fetch_history(self.server, self._async.token, options, answer))
        try:
            while not waiting.done():  # the bar is drawn from this thread (a kernel's)
                with contextlib.suppress(concurrent.futures.TimeoutError):
                    waiting.result(PROGRESS_EVERY)
                bar.show(answer)
            waiting.result()
        except BaseException:
            waiting.cancel()
            raise
        finally:
            bar.close(answer)
        return settle(answer)

    def buffer(
        self,
        contract: str | int,
        tick_types: str | Iterable[str] = DEFAULT_TICK_TYPES,
        *,
        max_ticks: int | None = None,
        max_seconds: float | None = None,
        batch_ms: float | None = None,
    ) -> Any:
        """A `TickBuffer` this client keeps filling (see `AsyncClient.buffer`)."""
        coro = self._async.buffer(
            contract, tick_types, max_ticks=max_ticks, max_seconds=max_seconds, batch_ms=batch_ms
        )
        return self._call(coro, "buffer")

    def unsubscribe(self, handle: Any) -> None:
        """Stop a stream from `stream()` or a buffer from `buffer()`."""
        if isinstance(handle, SyncStream):
            handle.close()
        else:
            self._call(self._async.unsubscribe(handle), "unsubscribe")

    def contracts(self, symbol: str | int) -> Any:
        """Every contract the server finds for `symbol`, as a DataFrame (see
        `AsyncClient.contracts`)."""
        from ibstream.client.contracts import check_symbol

        return self._call(self._async.contracts(check_symbol(symbol)), "contracts")

    def ping(self) -> float:
        return self._call(self._async.ping(), "ping")

    def __repr__(self) -> str:
        return f"Client({self.server!r}, transport={self._async.transport!r}, state={self.state!r})"


async def _read(read: Callable[[], list]) -> list:
    return read()
