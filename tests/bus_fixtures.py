"""Bus fixtures: a real nats-server (JetStream, a free port, its store in tmp_path), and
readers of what the bus holds, through nats-py directly (not through ibstream's own bus
code, so they check it); for the edge tests, a scripted publisher that puts exactly the
messages a test wants on the bus (ticks encoded by the protocol's own `encode_tick`, events,
malformed messages) and answers control requests, for edge behaviour a real source never
shows on demand, and a list of servers stopped at the end.

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
from ibstream.model import ContractInfo, Tick, TickType
from ibstream.protocol.encode import EncodedTick, encode_tick
from ibstream.server.run import ServerHandle

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
    """One tick of a message of the stream (`tick` set, `end`: it ends its gathering
    window) or an event (`event`), with the message's stream sequence and id."""

    def __init__(self, subject: str, data: bytes, stream_seq: int, msg_id: str | None):
        self.subject, self.data, self.stream_seq, self.msg_id = subject, data, stream_seq, msg_id
        self.tick: wire.BusTick | None = None
        self.event = None if subject.startswith(wire.TICKS) else orjson.loads(data)
        self.end = False

    @classmethod
    def of(cls, subject: str, data: bytes, stream_seq: int, msg_id: str | None) -> list:
        """The message's ticks one by one (a pack), or the event."""
        if not subject.startswith(wire.TICKS):
            return [cls(subject, data, stream_seq, msg_id)]
        pack = wire.parse_pack(subject, data)
        out = []
        for tick in pack.ticks:
            one = cls(subject, data, stream_seq, msg_id)
            one.tick, one.end = tick, pack.end and tick is pack.ticks[-1]
            out.append(one)
        return out


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
                out += BusMessage.of(
                    msg.subject, msg.data, msg.metadata.sequence.stream, headers.get(wire.MSG_ID)
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


AAPL = ContractInfo(265598, "AAPL", "STK", "SMART", "USD", local_symbol="AAPL")


@asynccontextmanager
async def stopped_at_end() -> AsyncIterator[list[ServerHandle]]:
    """A list for the servers a test starts; each is stopped at the end, last first."""
    started: list[ServerHandle] = []
    try:
        yield started
    finally:
        for handle in reversed(started):
            await handle.stop()


class ScriptedSource:
    """Publishes what the test says on the bus and answers `ibstream.control.*` for AAPL."""

    def __init__(self, url: str, server_id: str = "0123456789abcdef"):
        self.url = url
        self.server_id = server_id
        self.nc: nats.NATS | None = None
        self.js = None
        self.sequences: dict[tuple[int, TickType], int] = {}
        self.holds: list[dict] = []
        self.released: list[dict] = []
        self.releases = asyncio.Event()  # set at each release request
        self.answer = True  # False: the control responder stays silent (a hung source)
        self._clock = 1_700_000_000_000_000_000

    async def start(self) -> ScriptedSource:
        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream()
        await self.js.add_stream(name=wire.STREAM, subjects=wire.SUBJECTS, duplicate_window=120)
        await self.nc.subscribe(wire.control_subject("*"), cb=self._control)
        return self

    async def stop(self) -> None:
        if self.nc is not None:
            await self.nc.close()

    async def event(self, status: str, **fields: object) -> None:
        body = {"server_id": self.server_id, "status": status, "message": status, **fields}
        await self.js.publish(wire.event_subject(self.server_id), orjson.dumps(body))

    async def started(self) -> None:
        await self.event("source_started", details={})

    async def opened(self, tick_type: TickType = TickType.LAST) -> None:
        last = self.sequences.get((AAPL.contract_id, tick_type), 0)
        await self.event(
            "stream_opened",
            contract=AAPL.to_dict(),
            contract_id=AAPL.contract_id,
            tick_type=tick_type.value,
            last_sequence=last,
        )

    async def ticks(self, n: int, tick_type: TickType = TickType.LAST) -> list[EncodedTick]:
        """Publish `n` ticks of AAPL: what went out, as the source encoded it."""
        out = []
        key = (AAPL.contract_id, tick_type)
        for _ in range(n):
            seq = self.sequences[key] = self.sequences.get(key, 0) + 1
            self._clock += 1_000_000
            tick = Tick(AAPL.contract_id, tick_type, self._clock, price=100 + seq / 100, size=seq)
            entry = encode_tick(tick, seq)
            headers = {wire.MSG_ID: wire.message_id(self.server_id, *key, seq)}
            body = wire.pack_body(self.server_id, [wire.tick_record(entry, seq)], end=True)
            await self.js.publish(wire.tick_subject(*key), body, headers=headers)
            out.append(entry)
        return out

    async def raw(self, subject: str, body: bytes) -> None:
        await self.js.publish(subject, body)

    async def _control(self, msg: nats.aio.msg.Msg) -> None:
        if not self.answer:
            return
        action = msg.subject.rsplit(".", 1)[-1]
        request = orjson.loads(msg.data)
        if action == "resolve":
            ok: dict = {"contract": AAPL.to_dict()}
        elif action == "hold":
            self.holds.append(request)
            key = (request["contract_id"], TickType.parse(request["tick_type"]))
            ok = {"server_id": self.server_id, "last_sequence": self.sequences.get(key, 0)}
        elif action == "release":
            self.released.append(request)
            self.releases.set()
            ok = {}
        else:
            ok = {}
        await msg.respond(orjson.dumps({"ok": ok}))
