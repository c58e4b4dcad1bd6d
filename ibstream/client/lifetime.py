"""A client nobody references any more releases its connection.

A notebook cell `client = Client(url); client.collect(...)` run again rebinds `client`
without `close()`; before this, every run left a WebSocket open until the kernel restarted,
and the server's per-IP limit soon refused every new client. `weakref.finalize` on the
`AsyncClient` (the blocking `Client` holds exactly one) closes its transport on the loop the
transport runs on.

For that to work nothing the transport keeps running may point back at the client: the
finaliser holds a `Held` (the transport, its loop, the event log) and never the client. The
one deliberate exception: a subscription that goes on by itself (an `on_tick` stream, a
`buffer()`) keeps its client alive through `Subscription.keeper` until it ends, because the
callback or the buffer is its consumer, not the client handle.

A client can also outlive its use while still referenced (a notebook's output history holds
a cell's last value). When the server refuses a connection for its per-IP limit, the
connections of this process's idle clients of that server (connected, no subscription) are
closed to make room, and the connection is tried again; those clients reconnect on their next
call (`free_idle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ibstream.client.events import ClientState, EventLog
from ibstream.client.options import Backoff
from ibstream.errors import ErrorCode, StreamError

if TYPE_CHECKING:
    from ibstream.client.aio import AsyncClient

T = TypeVar("T")
log = logging.getLogger("ibstream.client")
_SETTLE = Backoff(initial=0.05, maximum=0.5)
_closing: set[asyncio.Task[None]] = set()  # strong references until each close ends
_clients: weakref.WeakSet[AsyncClient] = weakref.WeakSet()  # every client of this process


class Held:
    """What a client must release when it is garbage; never a reference to the client."""

    __slots__ = ("link", "loop", "events", "name")

    def __init__(self, events: EventLog, name: str) -> None:
        self.link: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.events = events
        self.name = name


def release_when_garbage(client: AsyncClient, held: Held) -> weakref.finalize:
    _clients.add(client)
    finalizer = weakref.finalize(client, _release, held)
    finalizer.atexit = False  # at interpreter exit the loop is gone anyway
    return finalizer


def _release(held: Held) -> None:
    """Runs in whichever thread dropped the client: hand the close to its loop."""
    link, loop = held.link, held.loop
    held.link = None
    if link is None or loop is None or loop.is_closed():
        return
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing runs any more
        loop.call_soon_threadsafe(_close, held, link)


def _close(held: Held, link: Any) -> None:
    log.info(
        "%s: the client was garbage-collected without close(); closing its connection "
        "(use `with Client(...) as client:` to close it at a known moment)",
        held.name,
    )
    held.events.set_state(ClientState.CLOSED, "garbage-collected without close()")
    task = asyncio.ensure_future(link.close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


def per_ip_limit(exc: BaseException) -> bool:
    """The server's refusal of one more connection from this IP address."""
    return (
        isinstance(exc, StreamError)
        and exc.code == ErrorCode.RATE_LIMIT_EXCEEDED
        and "max_connections_per_ip" in exc.details
    )


async def free_idle(client: AsyncClient) -> int:
    """Close the connections of this process's other idle clients of `client.server` on this
    loop; returns how many. They reconnect on their next call."""
    loop = asyncio.get_running_loop()
    idle = [
        other
        for other in list(_clients)
        if other is not client
        and other.server == client.server
        and other._held.loop is loop
        and other._idle()
    ]
    for other in idle:
        await other._suspend()
    if idle:
        log.warning(
            "%s: the server's per-IP connection limit was reached; closed the idle "
            "connections of %d earlier client(s) of this process (close clients with `with` "
            "or close() to keep within the limit)",
            client.server,
            len(idle),
        )
    return len(idle)


async def with_room(client: AsyncClient, attempt: Callable[[], Awaitable[T]]) -> T:
    """`attempt()`; refused for the per-IP limit, tried again once idle connections of this
    process were freed (a few times, while the server finishes closing them)."""
    try:
        return await attempt()
    except StreamError as exc:
        if not (per_ip_limit(exc) and await free_idle(client)):
            raise
    for delay in itertools.islice(_SETTLE.delays(), 3):
        try:
            return await attempt()
        except StreamError as exc:
            if not per_ip_limit(exc):
                raise
        await asyncio.sleep(delay)  # backoff while the freed slots are released
    return await attempt()
