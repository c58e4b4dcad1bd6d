"""Server settings: one dataclass shared by the app, the uvicorn runner and the CLI.

Defaults follow the system ibstream grew out of (port 8001, 10 connections per IP,
20 streams per connection).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import time

_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")


def parse_clock(text: object) -> time:
    """`HH:MM` (24-hour, 00:00 to 23:59) as a time of day (`backfill_from`); ValueError says
    what it got."""
    found = _CLOCK.fullmatch(text.strip()) if isinstance(text, str) else None
    if found is None or int(found[1]) > 23 or int(found[2]) > 59:
        raise ValueError(f"expected a time of day HH:MM (00:00 to 23:59), got {text!r}")
    return time(int(found[1]), int(found[2]))


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8001
    ib_host: str = "127.0.0.1"
    ib_port: int = 4002
    client_id: int = 1
    ib_lib: str | None = None  # "ib_insync" | "ib_async"; None: $IBSTREAM_IB_LIB or ib_insync
    # start_server waits this long for IB before serving (degraded, still retrying) without it.
    ib_connect_timeout: float = 4.0
    max_connections_per_ip: int = 10
    max_streams_per_connection: int = 20
    max_message_bytes: int = 65536
    queue_size: int = 10_000
    # Replayed ticks (resumes) one connection holds queued at most, beside queue_size live
    # ones: two full rings. A resume that needs more replays its newest ticks and reports
    # the rest as a `replay_limit` gap.
    replay_size: int = 20_000
    ring_size: int = 10_000
    # An upstream subscription and its ring outlive their last client this long, so a lone
    # client that reconnects within it resumes without a gap; 0 cancels upstream at once.
    channel_grace_seconds: float = 30.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    # A single frame that cannot be written for this long marks the client as dead
    # (SLOW_CONSUMER); it also bounds how long a stuck close handshake may take.
    send_timeout: float = 10.0
    # How long stop() waits for clients to receive their `complete` messages.
    shutdown_timeout: float = 5.0
    # Kernel send buffer per client socket (SO_SNDBUF, inherited from the listening socket).
    # None keeps the OS autotuning (up to ~4 MiB on Linux); a small value bounds what a dead
    # client can pin in kernel memory and makes a stalled client show up sooner.
    socket_send_buffer: int | None = None
    sse_ping_interval: float = 15.0
    # Shared secret: required (Authorization: Bearer or ?token=) when set, and refused to start
    # without one off loopback. Never logged.
    token: str | None = field(default=None, repr=False)
    # Browser page origins allowed to open streams (exact "scheme://host[:port]"); requests
    # without an Origin header (Python, curl) always pass.
    allowed_origins: tuple[str, ...] = ()
    # Called with every payload a transport sends (the tests validate them against the
    # published schema); None in production.
    sent_observer: Callable[[bytes], None] | None = None
    log_level: str = "warning"
    # The tick store to record every upstream stream into (a directory or s3:// URI); None
    # records nothing. Parts become visible at least every record_flush seconds.
    record: str | None = None
    record_flush: float = 1.0
    # Streams kept open and recorded from start-up whether or not a client watches them:
    # "SPEC[:tick_type,tick_type]" (default tick types bid_ask,last), e.g. "ES", "265598:last".
    record_contracts: tuple[str, ...] = ()
    # With `record`: fill the store's gaps (restarts, IB outages) from IB's historical ticks.
    backfill: bool = True
    # With backfill: each record_contracts stream's day from this time (the exchange's zone,
    # else UTC) to its first start that day becomes a `before_start` gap, once a day.
    backfill_from: time | None = None
    # The NATS server (nats://host:4222) to publish every tick and source event to (the
    # JetStream stream ibstream.bus.wire.STREAM, created or updated at start); None: no bus.
    bus: str | None = None
    bus_max_age: float = 86_400.0  # seconds the bus keeps a message
    bus_max_bytes: int | None = None  # the stream's size bound; None: unlimited
    bus_replicas: int = 1  # copies of the stream in a NATS cluster
    # Ticks held while NATS is away (or slower than the ticks); past it the oldest go,
    # counted, and an event on the bus names the ranges lost.
    bus_buffer: int = 200_000
    # An edge server (`--from-bus nats://HOST:4222`): no IB connection, its streams come from
    # the source's ticks on this NATS JetStream bus; None is a server connected to IB.
    from_bus: str | None = None
    # An edge's hold on a stream at the source lasts this long unless renewed (every third
    # of it while the edge has clients for it), so a dead edge frees its streams.
    bus_lease: float = 30.0
    # An edge starts reading the source's current run this far back (or at its start, if
    # younger): what fills its resume buffers, without a day of ticks read at start-up.
    bus_catch_up: float = 600.0

    @property
    def ws_max_size(self) -> int:
        """Frames up to this size reach the app, which answers INVALID_MESSAGE and closes
        with 1009 when they exceed max_message_bytes; bigger frames are cut by the
        WebSocket layer itself (close 1009, no error message)."""
        return self.max_message_bytes * 4
