"""The dashboards that are live in this process, so re-running a cell replaces one.

A dashboard stays reachable from the ipywidgets registry until it is closed, so one the
notebook no longer names would stream on. `dashboard()` therefore closes an earlier live
one of the same contract on the same server and transport, and `close_all()` closes all.
Imports neither ipywidgets nor bqplot.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, Protocol

log = logging.getLogger("ibstream.widgets")
_live: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()

Key = tuple[str, str, str]  # (server, transport, contract as asked)


class Closable(Protocol):
    name: str

    def close(self) -> None: ...

    def serves(self, key: Key) -> bool: ...


def key(server: str, transport: str, contract: str | int) -> Key:
    return (server.rstrip("/"), transport, str(contract).strip().upper())


def add(dashboard: Closable) -> None:
    with _lock:
        _live.add(dashboard)


def discard(dashboard: Closable) -> None:
    with _lock:
        _live.discard(dashboard)


def live() -> list[Closable]:
    """The dashboards open now, oldest first is not guaranteed."""
    with _lock:
        return list(_live)


def close_same(wanted: Key) -> int:
    """Close every live dashboard that shows `wanted`; returns how many."""
    earlier = [d for d in live() if d.serves(wanted)]
    for dashboard in earlier:
        log.info("closing the earlier live dashboard of %s on %s", dashboard.name, wanted[0])
        dashboard.close()
    return len(earlier)


def close_all() -> int:
    """Close every live dashboard of this process (unsubscribe, stop, remove the widgets);
    returns how many were closed."""
    dashboards = live()
    for dashboard in dashboards:
        dashboard.close()
    return len(dashboards)
