"""Fixtures of the bus recorder tests: a publisher speaking the bus protocol with nats-py and
ibstream.bus.wire (the source's side: stream, events, ticks with message ids, contract
lookups), the `ibstream record` process to kill and start again, and the store read back."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import orjson
from nats.js import api

from ibstream.bus import wire
from ibstream.model import ContractInfo, Tick, TickType
from ibstream.protocol.encode import encode_tick
from ibstream.store import layout
from tests.store_data import ES

WAIT = 20.0
DURABLE = "rec-test"
RUN = "a1b2c3d4e5f60718"  # a source run's server_id (16 characters, as the hub's)
KINDS = ("bid_ask", "last")


class Publisher:
    """The source's side of the bus protocol, done by hand: what `serve --bus` publishes."""

    def __init__(self, url: str, *, control: bool = True) -> None:
        self.url = url
        self.control = control  # answer contract lookups (no real source is there)
        self.nc: nats.NATS | None = None
        self.contracts: dict[int, ContractInfo] = {}
        self.resolves = 0

    async def __aenter__(self) -> Publisher:
        self.nc = await nats.connect(self.url)
        if self.control:
            await self.nc.subscribe(
                wire.control_subject("resolve"), queue="ibstream-source", cb=self._resolve
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.nc is not None
        await self.nc.close()

    @property
    def js(self):
        assert self.nc is not None
        return self.nc.jetstream()

    async def create(self, **limits: object) -> None:
        config = api.StreamConfig(
            name=wire.STREAM, subjects=wire.SUBJECTS, duplicate_window=120.0, **limits
        )
        await self.js.add_stream(config)

    async def _resolve(self, msg) -> None:
        self.resolves += 1
        spec = orjson.loads(msg.data)["spec"]
        contract = self.contracts.get(int(spec))
        body = {"ok": {"contract": contract.to_dict()}} if contract else {"error": {}}
        await msg.respond(orjson.dumps(body))

    async def event(self, server_id: str, status: str, **extra: object) -> int:
        body = {"server_id": server_id, "status": status, "message": status, "details": {}}
        body.update(extra)
        ack = await self.js.publish(wire.event_subject(server_id), orjson.dumps(body))
        return ack.seq

    async def opened(self, server_id: str, contract: ContractInfo, kind: str, last: int) -> None:
        self.contracts[contract.contract_id] = contract
        await self.event(
            server_id,
            "stream_opened",
            contract=contract.to_dict(),
            contract_id=contract.contract_id,
            tick_type=kind,
            last_sequence=last,
        )

    async def begin(self, server_id: str, contract: ContractInfo, kinds: tuple[str, ...]) -> None:
        """A source run's start: `source_started`, then each stream opened from sequence 1."""
        await self.event(server_id, "source_started")
        for kind in kinds:
            await self.opened(server_id, contract, kind, 0)

    async def ticks(self, server_id: str, ticks: list[Tick], seqs: dict[TickType, int]) -> None:
        """Publish `ticks`, each stream numbered on from `seqs` (updated)."""
        for tick in ticks:
            seqs[tick.tick_type] = seqs.get(tick.tick_type, 0) + 1
            await self.tick(server_id, tick, seqs[tick.tick_type])

    async def tick(self, server_id: str, tick: Tick, sequence: int) -> int:
        entry = encode_tick(tick, sequence)
        msg_id = wire.message_id(server_id, tick.contract_id, tick.tick_type, sequence)
        ack = await self.js.publish(
            wire.tick_subject(tick.contract_id, tick.tick_type),
            wire.pack_body(server_id, [wire.tick_record(entry, sequence)], end=True),
            headers={wire.MSG_ID: msg_id},
        )
        return ack.seq

    async def acked(self, durable: str = DURABLE) -> int:
        with contextlib.suppress(Exception):
            return (await self.js.consumer_info(wire.STREAM, durable)).ack_floor.stream_seq
        return 0

    async def first_run(self, ticks: list[Tick], seqs: dict[TickType, int]) -> None:
        """The stream created, source run `RUN` begun (`KINDS`), `ticks` published, and
        everything acknowledged by the recorder."""
        await self.create()
        await self.begin(RUN, ES, KINDS)
        await self.ticks(RUN, ticks, seqs)
        await self.wait_acked()

    async def wait_acked(
        self, beyond: int | None = None, timeout: float = WAIT, durable: str = DURABLE
    ) -> None:
        """Until the recorder acknowledged the stream's last message (or one past `beyond`):
        its ack floor lives in another process and the nats-server, so it is polled."""
        last = (await self.js.stream_info(wire.STREAM)).state.last_seq
        last = last if beyond is None else beyond + 1
        async with asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(Exception):
                    info = await self.js.consumer_info(wire.STREAM, durable)
                    if info.ack_floor.stream_seq >= last:
                        return
                await asyncio.sleep(0.05)


@contextlib.contextmanager
def recording(bus_url: str, tmp_path: Path, *options: str) -> Iterator[RecorderProcess]:
    """`ibstream record` (more `options` given) on `bus_url` into tmp_path/store, logging to
    tmp_path/recorder.log; not started; killed at the end whatever the test did."""
    process = RecorderProcess(bus_url, tmp_path / "store", tmp_path / "recorder.log")
    process.extra = list(options)
    try:
        yield process
    finally:
        process.kill()


class RecorderProcess:
    """`ibstream record` as a child process."""

    def __init__(self, bus_url: str, store: Path, log: Path, durable: str = DURABLE) -> None:
        self.bus_url, self.store, self.log, self.durable = bus_url, store, log, durable
        self.proc: subprocess.Popen | None = None
        self.extra: list[str] = []  # more options of `ibstream record`

    def start(self) -> None:
        cmd = [sys.executable, "-m", "ibstream", "-v", "record", "--from-bus", self.bus_url]
        cmd += ["--to", str(self.store), "--durable", self.durable, "--record-flush", "0.1"]
        cmd += self.extra
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stderr=log, stdout=log)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    async def terminate(self) -> int:
        """SIGTERM, then its exit code (waited for off the loop: the test's own source may
        be on it); its log if it does not stop."""
        assert self.proc is not None
        self.proc.terminate()
        try:
            return await asyncio.to_thread(self.proc.wait, WAIT)
        except subprocess.TimeoutExpired:
            raise AssertionError("the recorder ignored SIGTERM:\n" + self.text()[-3000:]) from None

    async def wait_log(self, words: str, timeout: float = WAIT) -> None:
        """Until its log holds `words` (another process's file: polled)."""
        async with asyncio.timeout(timeout):
            while True:
                if self.log.exists() and words in self.text():
                    return
                await asyncio.sleep(0.05)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def health_url(self) -> str:
        """Its `/health` URL, as the line it logs at start names it (its latest start's)."""
        await self.wait_log("recorder health at ")
        return re.findall(r"recorder health at (\S+)", self.text())[-1]


def stored(store: Path) -> list[dict]:
    return layout.ticks_dataset(layout.open_root(store)).to_table().to_pylist()


def gap_rows(store: Path) -> list[dict]:
    if not (store / layout.GAPS).exists():
        return []
    return layout.gaps_dataset(layout.open_root(store)).to_table().to_pylist()


def tick_of_data(data: dict) -> Tick:
    """A client's tick `data` back into the hub's Tick."""
    names = ("price", "size", "bid_price", "bid_size", "ask_price", "ask_size", "mid_price")
    values = {k: data[k] for k in (*names, "exchange", "conditions", "ib_time") if k in data}
    return Tick(data["contract_id"], TickType(data["tick_type"]), data["recv_ns"], **values)
