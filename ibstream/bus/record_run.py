"""One source run (`server_id`) as the bus recorder writes it: the store's `Recorder` under
that run's id (parts are named by it, its crash marker is the run's), plus what the bus
makes necessary and a hub never needs:

- ticks may come twice (a restarted recorder is handed again what it had written but not
  acknowledged; a redelivery): each stream's last sequence on disk, then in memory, drops
  every tick at or below it, so nothing is stored twice;
- ticks may be missing (the bus expired them before they were read, or the source dropped
  them while the bus was away): a stream's sequence jumping is a `bus_expired` gap row naming
  the missing sequences and the time between the ticks around them.

A tick's `Tick` is read from the bus body's `data` JSON with the hub's own field types.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ibstream.bus.wire import BusTick
from ibstream.model import ContractInfo, Tick, TickType
from ibstream.store import catalog, crash, gaps, layout, state
from ibstream.store.recorder import Recorder

log = logging.getLogger(__name__)
EXPIRED = "bus_expired"
_FLOATS = ("price", "size", "bid_price", "bid_size", "ask_price", "ask_size", "mid_price")
_TEXTS = ("exchange", "conditions")
Key = tuple[int, TickType]


def tick_of(bus: BusTick) -> Tick:
    """The hub's `Tick` of a bus tick (ValueError if its `data` disagrees with its head)."""
    tail = bus.entry.tail
    data = orjson.loads(tail[tail.index(b',"data":') + 8 : -1])
    if not isinstance(data, dict):
        raise ValueError("the tick's data is not an object")
    if data.get("sequence") != bus.entry.sequence or data.get("recv_ns") != bus.entry.recv_ns:
        raise ValueError("the tick's data disagrees with its head (sequence, recv_ns)")
    if data.get("contract_id") != bus.contract_id or data.get("tick_type") != bus.tick_type.value:
        raise ValueError("the tick's data disagrees with its subject (contract, tick type)")
    values: dict = {}
    for name in _FLOATS:
        value = data.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"the tick's {name} is not a number: {value!r}")
            values[name] = float(value)
    for name in _TEXTS:
        value = data.get(name)
        if value is not None:
            if not isinstance(value, str):
                raise ValueError(f"the tick's {name} is not text: {value!r}")
            values[name] = value
    ib_time = data.get("ib_time")
    if ib_time is not None:
        if isinstance(ib_time, bool) or not isinstance(ib_time, int):
            raise ValueError(f"the tick's ib_time is not an integer: {ib_time!r}")
        values["ib_time"] = ib_time
    return Tick(bus.contract_id, bus.tick_type, bus.entry.recv_ns, **values)


def contract_of(body: object) -> ContractInfo:
    """A `ContractInfo.to_dict()` back (TypeError / ValueError if it is not one)."""
    if not isinstance(body, dict):
        raise TypeError(f"a contract must be an object, not {type(body).__name__}")
    names = ContractInfo.__dataclass_fields__
    fields = {k: v for k, v in body.items() if k in names}
    contract = ContractInfo(**fields)
    if isinstance(contract.contract_id, bool) or not isinstance(contract.contract_id, int):
        raise TypeError(f"a contract_id must be an integer, not {contract.contract_id!r}")
    for name in ("symbol", "sec_type", "exchange", "currency", "local_symbol"):
        if not isinstance(getattr(contract, name), str):
            raise TypeError(f"a contract's {name} must be text")
    return contract


@dataclass(eq=False)
class RecordRun:
    """The recording of one source run."""

    root: layout.StoreRoot
    server_id: str
    flush_seconds: float
    recorder: Recorder = field(init=False)
    last: dict[Key, tuple[int, int]] = field(default_factory=dict)  # -> (sequence, recv ns)
    opened: dict[Key, tuple[int, int]] = field(default_factory=dict)  # -> (next seq, ns)
    closed: set[Key] = field(default_factory=set)  # closed by the source since its last tick
    duplicates: int = 0
    missing: int = 0

    async def start(self, left: state.RunMarker | None, spared: set[str]) -> None:
        """Resume what is on disk of this run (`left`: the marker a killed recorder left of
        it, taken over rather than counted as a crash: the bus still holds what that
        recorder had not acknowledged; each stream's last tick on disk), then record.
        `spared`: other runs' markers the bus recorder ends itself once it caught up."""
        # Its own periodic flush only compacts; the bus recorder flushes and then acks.
        self.recorder = Recorder(self.root, flush_seconds=max(self.flush_seconds, 3600.0))
        self.recorder.spared = spared
        if left is not None:
            await asyncio.to_thread(state.remove, self.root, left)
        await self.recorder.start(self.server_id)
        tails = await asyncio.to_thread(crash.stored_tails, self.root, self.server_id)
        for (contract_id, kind), (recv_ns, sequence) in tails.items():
            self.last[(contract_id, TickType.parse(kind))] = (sequence, recv_ns)
        self.recorder.written_gaps = await asyncio.to_thread(self._written_gaps)
        marker = self.recorder.marker
        if left is not None and marker is not None:
            marker.started_ns = left.started_ns
            marker.streams.update({**left.streams, **marker.streams})
        if tails:
            log.info(
                "resuming the recording of source run %s (%d streams)", self.server_id, len(tails)
            )

    def _written_gaps(self) -> set[tuple]:
        """The gaps of this run the store holds (a resumed run notes none of them again)."""
        if not catalog.list_gap_files(self.root):
            return set()
        table = layout.gaps_dataset(self.root).to_table(
            columns=list(gaps.IDENTITY), filter=pc.field("server_id") == self.server_id
        )
        table = table.set_column(2, "start", pc.cast(table["start"], pa.int64()))
        return {tuple(row.values()) for row in table.to_pylist()}

    def stream_opened(self, key: Key, last_sequence: int, at_ns: int) -> None:
        """The source opened a stream: its ticks continue after `last_sequence`."""
        if key not in self.last:
            self.opened[key] = (last_sequence + 1, at_ns)

    def stream_closed(self, key: Key) -> None:
        self.closed.add(key)
        self.recorder.stream_closed(*key)

    def add(self, contract: ContractInfo, tick: Tick, seq: int, expired_since: int | None) -> bool:
        """Record `tick` unless it is already recorded (False). `expired_since`: the bus
        lost messages before this recorder read them, from then on (ns; 0: unknown), so a
        stream first seen mid-way lost its start."""
        key = (tick.contract_id, tick.tick_type)
        last = self.last.get(key)
        if last is not None and seq <= last[0]:
            self.duplicates += 1
            return False
        if last is not None:
            expected, since = last[0] + 1, last[1]
        elif key in self.opened:
            expected, since = self.opened.pop(key)
        elif expired_since is not None:
            expected, since = 1, expired_since
        else:
            expected, since = seq, 0
        self.closed.discard(key)
        if seq > expected:
            self._hole(key, expected, seq, min(since or tick.recv_ns, tick.recv_ns), tick.recv_ns)
        self.recorder.add(key, contract, tick, seq)
        self.last[key] = (seq, tick.recv_ns)
        return True

    def _hole(self, key: Key, first: int, after: int, start: int, end: int) -> None:
        self.missing += after - first
        message = (
            f"the bus no longer held sequences {first}-{after - 1} of source run "
            f"{self.server_id} when the recorder read it (expired, or dropped by the source "
            "while the bus was away)"
        )
        log.warning("%s %s: %s", key[0], key[1].value, message)
        self.recorder.note_gap(key[0], key[1].value, start, end, EXPIRED, first - 1, message)

    def ended(self, next_run: str, at_ns: int) -> list[dict]:
        """The source was restarted as `next_run` at `at_ns`: a `server_restarted` gap for
        every stream this run still held (what the source received but never published)."""
        marker = self.recorder.marker
        if marker is None:
            return []
        rows = stale_gaps(marker, next_run, at_ns, self.closed)
        return [r for r in rows if identity(r) not in self.recorder.written_gaps]


def identity(row: dict) -> tuple:
    return tuple(row[name] for name in gaps.IDENTITY)


def stale_gaps(
    marker: state.RunMarker,
    next_run: str,
    at_ns: int,
    closed: set[Key] = frozenset(),  # type: ignore[assignment]
) -> list[dict]:
    """A `server_restarted` gap for each stream run `marker` still held when `next_run`
    began at `at_ns` (a stream the source closed, or a marker says is closed: none)."""
    rows = []
    for mark in marker.streams.values():
        if not mark.open or (mark.contract_id, TickType.parse(mark.tick_type)) in closed:
            continue
        message = (
            f"source run {marker.server_id} ended without closing this stream (restarted as "
            f"{next_run}); ticks it had not published were lost"
        )
        rows.append(
            gaps.row(
                mark.contract_id, mark.tick_type, mark.last_ns or marker.started_ns, at_ns,
                "server_restarted", marker.server_id, mark.last_sequence, message,
            )
        )  # fmt: skip
    return rows
