"""Bus fixtures: a real nats-server (JetStream, a free port, its store in tmp_path), and
readers of what the bus holds, through nats-py directly (not through ibstream's own bus
code, so they check it).

Use from a test module with `from tests.bus_fixtures import nats_server  # noqa: F401`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import orjson
import pytest
from nats.js.api import DeliverPolicy

from ibstream.bus import wire
from ibstream.bus.nats_server import NatsServer

WAIT = 10.0


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A started single-node JetStream server; killed at the end whatever the test did."""
    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
async def nats_client(nats_server: NatsServer) -> AsyncIterator[nats.NATS]:
    """A plain nats-py connection to `nats_server` (requests, stream reads)."""
    async with connected(nats_server.url) as nc:
        yield nc


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[nats.NATS]:
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        yield nc
    finally:
        await nc.close()


class BusMessage:
    """One message of the stream: a tick (`tick` set: wire.parse_tick) or an event (`event`)."""

    def __init__(self, subject: str, data: bytes, stream_seq: int, msg_id: str | None):
        self.subject, self.data, self.stream_seq, self.msg_id = subject, data, stream_seq, msg_id
        self.tick = wire.parse_tick(subject, data) if subject.startswith(wire.TICKS) else None
        self.event = orjson.loads(data) if self.tick is None else None


async def read_bus(nc: nats.NATS, timeout: float = WAIT) -> list[BusMessage]:
    """Every message the stream holds now, in stream order (an ordered push consumer)."""
    js = nc.jetstream()
    info = await js.stream_info(wire.STREAM)
    last, out = info.state.last_seq, []
    if info.state.messages == 0:
        return out
    sub = await js.subscribe(
        "ibstream.>",  # ticks and events: the stream's subjects
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    try:
        async with asyncio.timeout(timeout):
            while True:
                msg = await sub.next_msg(timeout=timeout)
                headers = msg.headers or {}
                out.append(
                    BusMessage(
                        msg.subject,
                        msg.data,
                        msg.metadata.sequence.stream,
                        headers.get(wire.MSG_ID),
                    )
                )
                if msg.metadata.sequence.stream >= last:
                    return out
    finally:
        await sub.unsubscribe()


async def bus_until(nc: nats.NATS, predicate, timeout: float = WAIT) -> list[BusMessage]:
    """Read the stream until `predicate(messages)` holds (the bus has no event to await for
    what another process published: polled, with a deadline)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                messages = await read_bus(nc, timeout)
            except nats.js.errors.NotFoundError:
                messages = []
            if predicate(messages):
                return messages
            await asyncio.sleep(0.1)


async def control(nc: nats.NATS, action: str, body: object, timeout: float = WAIT) -> dict:
    """A control request as an edge sends it; the decoded reply."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    reply = await nc.request(wire.control_subject(action), raw, timeout=timeout)
    return orjson.loads(reply.data)
