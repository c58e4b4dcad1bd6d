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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

from ibstream.client.events import ClientState, EventLog

log = logging.getLogger("ibstream.client")
_closing: set[asyncio.Task[None]] = set()  # strong references until each close ends


class Held:
    """What a client must release when it is garbage; never a reference to the client."""

    __slots__ = ("link", "loop", "events", "name")

    def __init__(self, events: EventLog, name: str) -> None:
        self.link: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.events = events
        self.name = name


def release_when_garbage(client: object, held: Held) -> weakref.finalize:
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
