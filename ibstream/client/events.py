"""What a client tells its user besides ticks: state changes, gaps, infos and errors.

Every event is logged and handed to the `on_event` callbacks, kept in a short history
(`client.events`) and counted (`reconnects`, `gaps`), so a reconnect or a lost stretch of
ticks is never silent.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from ibstream.errors import StreamError
from ibstream.protocol.changes import Changes

log = logging.getLogger("ibstream.client")


class ClientState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class StateChange:
    kind: ClassVar[str] = "state"
    state: ClientState
    previous: ClientState
    reason: str = ""
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Gap:
    """Ticks that could not be replayed after a reconnect. `reason` is the server's
    (not_buffered, upstream_idle, ib_disconnected, unknown_sequence) or the client's own
    (server_restarted: another server instance, positions void; missed: sequences jumped
    without a word from the server); `details` says what is known about the stretch."""

    kind: ClassVar[str] = "gap"
    contract_id: int | None
    tick_type: str | None
    reason: str
    message: str
    details: dict
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Info:
    """A stream status from the server, e.g. `ib_disconnected` / `resumed`."""

    kind: ClassVar[str] = "info"
    contract_id: int | None
    tick_type: str | None
    status: str
    message: str
    details: dict
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    kind: ClassVar[str] = "error"
    error: StreamError
    contract_id: int | None = None
    tick_type: str | None = None
    at: float = field(default_factory=time.time)


ClientEvent = StateChange | Gap | Info | ErrorEvent
Listener = Callable[[ClientEvent], object]


class EventLog:
    """State, counters, recent events and listeners of one client (used on its loop only)."""

    def __init__(self, name: str, listeners: list[Listener], keep: int = 1000):
        self.name = name
        self.state = ClientState.CONNECTING
        self.reconnects = 0
        self.gaps = 0
        self.recent: deque[ClientEvent] = deque(maxlen=keep)
        self.listeners = listeners
        self._changes = Changes()

    def set_state(self, state: ClientState, reason: str = "") -> None:
        if state == self.state or self.state == ClientState.CLOSED:
            return
        event = StateChange(state, self.state, reason)
        self.state = state
        level = logging.WARNING if state == ClientState.RECONNECTING else logging.INFO
        log.log(level, "%s: %s%s", self.name, state.value, f" ({reason})" if reason else "")
        self._publish(event)

    def emit(self, event: ClientEvent) -> None:
        if isinstance(event, Gap):
            self.gaps += 1
            log.warning("%s: gap in %s %s: %s", self.name, *_where(event), event.message)
        elif isinstance(event, ErrorEvent):
            log.warning("%s: error on %s %s: %s", self.name, *_where(event), event.error)
        else:
            log.info("%s: %s on %s %s: %s", self.name, event.status, *_where(event), event.message)
        self._publish(event)

    def _publish(self, event: ClientEvent) -> None:
        self.recent.append(event)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:  # a user's callback must not break the client
                log.exception("%s: on_event callback failed", self.name)
        self._changes.notify()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Return once predicate() holds; re-checked on every event (TimeoutError after)."""
        await self._changes.wait_for(predicate, timeout)


def _where(event: Gap | Info | ErrorEvent) -> tuple[object, object]:
    return (event.contract_id or "-", event.tick_type or "-")
