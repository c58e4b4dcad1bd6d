"""Fixtures of the bus tests: a real nats-server on a free port with a tmp store, and a
scripted publisher that puts exactly the messages a test wants on the bus (ticks encoded by
the protocol's own `encode_tick`, events, malformed messages) and answers control requests,
for edge behaviour a real source never shows on demand.

Test modules wrap these in fixtures of their own (see tests/client_fixtures.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import orjson

from ibstream.bus import wire
from ibstream.bus.nats_server import NatsServer
from ibstream.model import ContractInfo, Tick, TickType
from ibstream.protocol.encode import EncodedTick, encode_tick
from ibstream.server.run import ServerHandle

AAPL = ContractInfo(265598, "AAPL", "STK", "SMART", "USD", local_symbol="AAPL")


@contextlib.asynccontextmanager
async def stopped_at_end() -> AsyncIterator[list[ServerHandle]]:
    """A list for the servers a test starts; each is stopped at the end, last first."""
    started: list[ServerHandle] = []
    try:
        yield started
    finally:
        for handle in reversed(started):
            await handle.stop()


@contextlib.contextmanager
def running_nats(store: Path, port: int = 0) -> Iterator[NatsServer]:
    """A started nats-server with JetStream, killed at the end."""
    server = NatsServer(store, port=port).start()
    try:
        yield server
    finally:
        server.kill()


class ScriptedSource:
    """Publishes what the test says on the bus and answers `ibstream.control.*` for AAPL."""

    def __init__(self, url: str, server_id: str = "0123456789abcdef"):
        self.url = url
        self.server_id = server_id
        self.nc: nats.NATS | None = None
        self.js = None
        self.sequences: dict[tuple[int, TickType], int] = {}
        self.holds: list[dict] = []
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
            body = wire.tick_body(self.server_id, entry)
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
        else:
            ok = {}
        await msg.respond(orjson.dumps({"ok": ok}))
