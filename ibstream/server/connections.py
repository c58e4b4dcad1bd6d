"""Per-IP connection counting and the registry of open stream connections (SSE and WS).

One counter for every WebSocket and SSE connection (stream connections and `/ws/control`
alike), so a client cannot dodge the limit by mixing them. /health and /ws/stats are not
counted: they stay reachable when a client has used up its slots.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ibstream.errors import CloseCode, ErrorCode, StreamError
from ibstream.protocol.changes import Changes
from ibstream.server.subscriber import Subscriber

log = logging.getLogger(__name__)


class ConnectionLimiter:
    def __init__(self, max_per_ip: int, max_streams: int = 20):
        self.max_per_ip = max_per_ip
        self.max_streams = max_streams
        self.counts: Counter[str] = Counter()
        self.rejected = 0

    def acquire(self, ip: str) -> None:
        """Take a slot for `ip` or raise RATE_LIMIT_EXCEEDED."""
        if self.counts[ip] >= self.max_per_ip:
            self.rejected += 1
            log.warning("connection limit reached for %s (%d)", ip, self.max_per_ip)
            raise StreamError(
                ErrorCode.RATE_LIMIT_EXCEEDED,
                f"at most {self.max_per_ip} connections per IP address (stream and control "
                f"connections together); close one or share streams on one WebSocket (up to "
                f"{self.max_streams} per connection)",
                details={
                    "ip": ip,
                    "max_connections_per_ip": self.max_per_ip,
                    "open_connections": self.counts[ip],
                },
            )
        self.counts[ip] += 1

    def release(self, ip: str) -> None:
        self.counts[ip] -= 1
        if self.counts[ip] <= 0:
            del self.counts[ip]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def stats(self) -> dict:
        return {
            "connections": self.total,
            "per_ip": dict(self.counts),
            "max_connections_per_ip": self.max_per_ip,
            "rejected": self.rejected,
        }


@dataclass(eq=False)
class Connection:
    """One open stream connection (SSE response or WebSocket) and how to end it."""

    transport: str
    ip: str
    subscriber: Subscriber
    opened: float = field(default_factory=time.monotonic)
    close_code: int | None = None
    closing: bool = False

    def finish(self, close_code: int | None = None, reason: str | None = None) -> None:
        """End the connection from the server side after what is queued has been sent.

        With a `reason`, every open stream first gets a `complete` message with it.
        """
        if self.closing:
            return
        self.closing = True
        self.close_code = close_code
        if reason:
            self.subscriber.close_streams(reason)
        self.subscriber.close()


class Connections:
    """Open stream connections: per-IP limits, stats and a graceful server shutdown."""

    def __init__(self, max_per_ip: int, max_streams: int = 20):
        self.limiter = ConnectionLimiter(max_per_ip, max_streams)
        self.live: set[Connection] = set()
        self.shutting_down = False
        self.messages_sent = 0
        self.slow_consumers = 0
        self.closed_total = 0
        self.control = 0  # open /ws/control connections (counted per IP, not in `live`)
        self.history = 0  # streamed history answers (GET /v2/history), counted per IP too
        self._changes = Changes()

    def open(self, ip: str, transport: str, subscriber: Subscriber) -> Connection:
        self._take_slot(ip)
        conn = Connection(transport, ip, subscriber)
        self.live.add(conn)
        self._notify()
        return conn

    def open_control(self, ip: str) -> None:
        """Take a per-IP slot for a `/ws/control` connection (RATE_LIMIT_EXCEEDED past it)."""
        self._take_slot(ip)
        self.control += 1
        self._notify()

    def open_history(self, ip: str) -> None:
        """Take a per-IP slot for a streamed history answer (RATE_LIMIT_EXCEEDED past it)."""
        self._take_slot(ip)
        self.history += 1
        self._notify()

    def close_history(self, ip: str) -> None:
        self.limiter.release(ip)
        self.history -= 1
        self._notify()

    def _take_slot(self, ip: str) -> None:
        if self.shutting_down:
            raise StreamError(
                ErrorCode.CONNECTION_ERROR, "the server is shutting down; retry shortly"
            )
        self.limiter.acquire(ip)

    def close_control(self, ip: str) -> None:
        self.limiter.release(ip)
        self.control -= 1
        self._notify()

    def close(self, conn: Connection) -> None:
        """Release the connection's slot; safe to call more than once."""
        if conn not in self.live:
            return
        self.live.discard(conn)
        self.limiter.release(conn.ip)
        conn.subscriber.close()
        self.closed_total += 1
        closed = conn.subscriber.closed
        if closed is not None and closed.code == ErrorCode.SLOW_CONSUMER:
            self.slow_consumers += 1
        self._notify()

    def _notify(self) -> None:
        self._changes.notify()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Return once predicate() holds; re-checked whenever a connection opens or closes."""
        await self._changes.wait_for(predicate, timeout)

    async def shutdown(self, timeout: float) -> None:
        """Complete every stream with `server_shutdown` and wait until the clients are gone."""
        self.shutting_down = True
        for conn in list(self.live):
            conn.finish(CloseCode.GOING_AWAY, "server_shutdown")
        try:
            await self.wait_for(lambda: not self.live, timeout)
        except TimeoutError:
            log.warning("%d connection(s) still open after %.1fs shutdown", len(self.live), timeout)

    def stats(self) -> dict:
        subs = [
            {
                "transport": c.transport,
                "ip": c.ip,
                "client": c.subscriber.client,
                "queued": c.subscriber.queued,
                "sent": c.subscriber.sent,
                "age_seconds": round(time.monotonic() - c.opened, 3),
                "streams": [
                    {
                        "stream_id": h.stream_id,
                        "contract_id": h.contract.contract_id,
                        "tick_type": h.tick_type.value,
                        "ticks": h.count,
                        "last_sequence": h.last_sequence,
                    }
                    for h in c.subscriber.streams.values()
                ],
            }
            for c in self.live
        ]
        return {
            **self.limiter.stats(),
            "control_connections": self.control,
            "subscribers": subs,
            "max_queue_depth": max((s["queued"] for s in subs), default=0),
            "messages_sent": self.messages_sent,
            "slow_consumers_closed": self.slow_consumers,
            "connections_closed": self.closed_total,
        }
