"""History on request: the ticks of a contract's tick types over [start, end), from the store
first and from IB only for what the store lacks.

`prepare` checks the window (one error naming the field), resolves the contract, flushes the
recorder (so the live tail is on disk) and plans each tick type: pieces the store holds
(`store.coverage`) and holes asked of IB (`history_ib`). `run` then yields the messages of
the wire (docs/history.md): `history_started`, `history_ticks` (at most MAX_TICKS each, one
receive-time order across tick types), `history_progress` after every store slice and IB
page, and `history_complete` with what is missing (IB's refusals, a lost connection), or an
`error`. Work goes in bounded steps: a store slice of SLICE_NS, an IB page per tick type.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ibstream.errors import ErrorCode, StreamError
from ibstream.model import ContractInfo, TickType
from ibstream.protocol.times import iso_ns
from ibstream.protocol.validate import History
from ibstream.server.history_ib import Counters, Group, Hole
from ibstream.server.tick_columns import Ticks
from ibstream.server.timeline import merged
from ibstream.store import coverage
from ibstream.store.layout import StoreRoot
from ibstream.store.replay.recording import Recording as StoredRecording
from ibstream.store.replay.recording import RecordingError

log = logging.getLogger(__name__)
NS = 1_000_000_000
MAX_TICKS = 5_000  # ticks a history_ticks message holds at most
SLICE_NS = 60 * NS  # a store read covers this much receive time at most
Message = tuple[str, dict]


def bad(field_: str, message: str) -> StreamError:
    return StreamError(ErrorCode.INVALID_MESSAGE, message, details={"field": field_})


def window(req: History, now_ns: int) -> tuple[int, int]:
    """[start, end) of a request; `end` after now (or absent) is now."""
    start, end = req.start, req.end
    if start >= now_ns:
        raise bad("start", f"start ({iso_ns(start)}) is in the future (now: {iso_ns(now_ns)})")
    end = now_ns if end is None or end > now_ns else end
    if start >= end:
        raise bad("start", f"start ({iso_ns(start)}) must be before end ({iso_ns(end)})")
    return start, end


def holes_of(pieces: dict[str, list], start: int, end: int, now: int) -> list[Hole]:
    """The "ib" pieces as holes: IB seconds from the edges, inclusive (the second before
    the stored tick before it, the second of the one after it; at the request's own edges
    the whole seconds inside it); never IB's current second, whose history is not complete."""
    last_second = now // NS - 1
    out = []
    for kind, kind_pieces in pieces.items():
        for lo, hi, source in kind_pieces:
            if source != "ib":
                continue
            first = lo // NS - 1 if lo > start else -(-start // NS)
            last = hi // NS if hi < end else -(-end // NS) - 1
            edges = {first, first + 1} if lo > start else set()
            edges |= {last - 1, last} if hi < end else set()
            out.append(Hole(kind, lo, hi, first, min(last, last_second), frozenset(edges)))
    return out


@dataclass
class Plan:
    """A prepared request: what `run` answers."""

    contract: ContractInfo
    tick_types: list[TickType]
    start: int
    end: int
    pieces: dict[str, list[tuple[int, int, str]]]
    parts: dict[str, list] = field(default_factory=dict)  # each stream's store parts
    holes: list[Hole] = field(default_factory=list)

    def started(self) -> dict:
        return {
            "contract": self.contract.to_dict(),
            "tick_types": [t.value for t in self.tick_types],
            "start_ns": self.start,
            "end_ns": self.end,
            "plan": [
                {"tick_type": kind, "start_ns": lo, "end_ns": hi, "source": source}
                for kind, pieces in self.pieces.items()
                for lo, hi, source in pieces
            ],
        }


class HistoryService:
    """History for one server: its hub's IB source and (with `--record`) its store."""

    def __init__(self, hub: Any, recording: Any = None) -> None:
        self.hub = hub
        self.recording = recording

    @property
    def root(self) -> StoreRoot | None:
        return self.recording.recorder.root if self.recording is not None else None

    async def prepare(self, req: History) -> Plan:
        """Everything that can be wrong, found before anything streams."""
        now = time.time_ns()
        start, end = window(req, now)
        contract = await self._resolve(req.contract)
        if self.recording is not None:
            await self.recording.recorder.flush()
        root, cid = self.root, contract.contract_id
        pieces, parts = {}, {}
        for kind in req.tick_types:
            if root is not None:
                parts[kind.value] = await asyncio.to_thread(
                    coverage.stream_parts, root, cid, kind.value
                )
            pieces[kind.value] = await asyncio.to_thread(
                coverage.plan, root, parts.get(kind.value, []), cid, kind.value, start, end
            )
        if end == now:  # up to now: a stream recorded live right now has no tail hole
            for kind in req.tick_types:
                self._live_tail(pieces[kind.value], cid, kind)
        plan = Plan(contract, req.tick_types, start, end, pieces, parts)
        plan.holes = holes_of(pieces, start, end, now)
        source = self.hub.source
        stored = any(s == "store" for p in pieces.values() for _, _, s in p)
        if plan.holes and not stored and not getattr(source, "available", False):
            raise StreamError(
                ErrorCode.CONNECTION_ERROR,
                "IB is not connected and the store holds none of this range"
                + ("" if root is not None else " (the server does not record: --record)")
                + "; ask again once IB is back",
                details={"start_ns": start, "end_ns": end},
            )
        return plan

    async def run(self, plan: Plan) -> AsyncIterator[Message]:
        """The messages answering `plan`, oldest ticks first."""
        yield "history_started", plan.started()
        counters = Counters()
        from_store = [0]
        sources: list[tuple[int, AsyncIterator[Ticks]]] = []
        root, cid = self.root, plan.contract.contract_id
        for kind, pieces in plan.pieces.items():
            for lo, hi, source in pieces:
                if source == "store" and root is not None:
                    chunks = _store_chunks(root, plan.parts[kind], cid, kind, lo, hi, from_store)
                    sources.append((lo, chunks))
        if plan.holes:
            contract = await self._contract(cid)
            ib, pacer = (
                getattr(self.hub.source, "ib", None),
                getattr(self.hub.source, "pacer", None),
            )
            for holes in _groups(plan.holes):
                group = Group(holes, cid, contract, ib, pacer, root, counters)
                sources.append((group.lo, group.chunks()))
        total, sent, done = (plan.end - plan.start) / NS, 0, 0.0
        try:
            async for ticks, horizon in merged(sources):
                for i in range(0, len(ticks), MAX_TICKS):
                    yield "history_ticks", {"ticks": ticks[i : i + MAX_TICKS]}
                sent += len(ticks)
                reached = (min(horizon, plan.end) - plan.start) / NS
                done = min(total, max(done, reached))  # never back
                yield (
                    "history_progress",
                    {
                        "done_seconds": round(done, 3),
                        "total_seconds": round(total, 3),
                        "ticks": sent,
                        "requests": counters.requests,
                    },
                )
        except StreamError as exc:
            yield "error", exc.body()
            return
        except Exception as exc:  # noqa: BLE001 - the client is told, the server lives
            log.exception("history of %s failed", plan.contract.symbol)
            error = StreamError(ErrorCode.INTERNAL_ERROR, f"history failed: {exc}")
            yield "error", error.body()
            return
        yield (
            "history_complete",
            {
                "ticks": sent,
                "from_store": from_store[0],
                "from_ib": counters.from_ib,
                "requests": counters.requests,
                "missing": sorted(counters.missing, key=lambda m: (m["start_ns"], m["tick_type"])),
            },
        )

    def _live_tail(self, pieces: list, contract_id: int, kind: TickType) -> None:
        """The time since a live-recorded stream's last flushed tick is no hole: nothing
        came yet (an outage under way is not: IB is not available then)."""
        recorded = self.recording is not None and getattr(self.hub.source, "available", False)
        live = recorded and (contract_id, kind) in getattr(self.hub, "channels", {})
        if live and len(pieces) >= 2 and pieces[-1][2] == "ib" and pieces[-2][2] == "store":
            pieces[-2:] = [(pieces[-2][0], pieces[-1][1], "store")]

    async def _resolve(self, spec: str | int) -> ContractInfo:
        """The contract as a subscribe resolves it; while IB is away, as the store knows it
        (its parts' metadata), so a recorded range is still answered."""
        try:
            return await self.hub.resolve(spec)
        except StreamError as exc:
            if exc.code != ErrorCode.CONNECTION_ERROR or self.root is None:
                raise
            try:
                stored = await asyncio.to_thread(StoredRecording.open, self.root.uri)
                return stored.resolve(spec)
            except (StreamError, RecordingError):
                raise exc from None

    async def _contract(self, contract_id: int) -> object:
        """IB's qualified contract for the holes, or the error every hole then reports."""
        source = self.hub.source
        if not getattr(source, "available", False):
            return StreamError(
                ErrorCode.CONNECTION_ERROR,
                "IB is not connected: this part of the range is neither in the store nor "
                "to be had from IB now",
            )
        try:
            _, contract = await source.qualified(contract_id)
        except StreamError as exc:
            return exc
        return contract


async def _store_chunks(
    root: StoreRoot, parts: list, contract_id: int, kind: str, lo: int, hi: int, count: list[int]
) -> AsyncIterator[Ticks]:
    """A stored piece in slices of SLICE_NS receive time."""
    for at in range(lo, hi, SLICE_NS):
        table = await asyncio.to_thread(
            coverage.read, root, parts, contract_id, kind, at, min(hi, at + SLICE_NS)
        )
        count[0] += table.num_rows
        yield _stored_ticks(table, contract_id, kind)


def _stored_ticks(table: pa.Table, contract_id: int, kind: str) -> Ticks:
    """Stored rows (`coverage.read`) as wire ticks: column for column, an empty text as
    none, a sequence or source the row lacks as 0 / live, IB's time in seconds."""
    columns: dict[str, object] = {"contract_id": contract_id}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        columns[name] = column
    for name in ("exchange", "conditions"):
        text = columns[name].cast(pa.string())
        columns[name] = pc.if_else(pc.equal(text, ""), None, text)
    columns["recv_ns"] = columns.pop("time").cast(pa.int64())
    columns["ib_time"] = pc.divide(columns["ib_time"].cast(pa.int64()), 1_000_000_000)
    columns["sequence"] = pc.fill_null(columns["sequence"], 0)
    columns["source"] = pc.fill_null(columns["source"].cast(pa.string()), "live")
    return Ticks.from_columns(table.num_rows, kind, columns)


def _groups(holes: list[Hole]) -> list[list[Hole]]:
    """Holes whose IB seconds overlap, together (they are merged across tick types)."""
    out: list[list[Hole]] = []
    last = None
    for hole in sorted(holes, key=lambda h: (h.first, h.lo)):
        if out and last is not None and hole.first <= last:
            out[-1].append(hole)
            last = max(last, hole.last)
        else:
            out.append([hole])
            last = hole.last
    return out
