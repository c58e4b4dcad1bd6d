"""The holes of a history request filled from IB: paged, merged across tick types, stamped.

The holes of the requested tick types that overlap in IB seconds are fetched together (one
`Group`), page by page (`ib.history.pages`, on the connection's one `Pacer`), so memory holds
about a page per tick type whatever the range. Rows of the IB seconds every tick type has
complete are merged in `history.order`'s order (tie-break `taken`), stamped with receive
times strictly inside their hole (IB's second plus the row's place in it, `fill.fit_stamps`)
and handed on. At a hole's edge to stored ticks the edge seconds are asked too and the rows
a stored tick accounts for dropped (`fill.missing`: never twice, never dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ibstream.errors import StreamError
from ibstream.history.order import history_order
from ibstream.ib.history import SCHEMAS, pages
from ibstream.store import fill
from ibstream.store.layout import StoreRoot

log = logging.getLogger(__name__)
NS = fill.NS
KIND = {"BID_ASK": 0, "TRADES": 1, "MIDPOINT": 2}


@dataclass
class Hole:
    """One tick type's piece of the range the store lacks: receive ns [lo, hi) and the IB
    seconds [first, last] asked for it; `edges`: its IB seconds beside stored ticks (IB's
    ticks there are matched against them)."""

    tick_type: str
    lo: int
    hi: int
    first: int
    last: int
    edges: frozenset[int]
    reached: int = 0  # the first IB second not fetched yet
    previous: int = 0  # the last stamp given in it
    rows: list[dict] = field(default_factory=list)  # fetched, not yet handed on
    done: bool = False

    @property
    def what(self) -> str:
        return fill.WHAT[self.tick_type]


@dataclass
class Counters:
    requests: int = 0
    from_ib: int = 0
    missing: list[dict] = field(default_factory=list)


def missing_entry(hole: Hole, error: StreamError) -> dict:
    details = error.details or {}
    entry = {
        "tick_type": hole.tick_type,
        "start_ns": max(hole.lo, hole.reached * NS),
        "end_ns": hole.hi,
        "code": error.code.value,
        "message": error.message,
        "ib_code": details.get("ib_code"),
        "ib_message": details.get("ib_message"),
    }
    return {k: v for k, v in entry.items() if v is not None}


class Group:
    """Holes of several tick types that overlap in IB seconds, fetched and merged together."""

    def __init__(
        self,
        holes: list[Hole],
        contract_id: int,
        contract: object | StreamError,
        ib: object,
        pacer: object,
        root: StoreRoot | None,
        counters: Counters,
    ) -> None:
        self.holes = sorted(holes, key=lambda h: h.lo)
        self.lo = min(h.lo for h in holes)
        self.contract_id = contract_id
        self.contract = contract
        self.ib, self.pacer, self.root, self.counters = ib, pacer, root, counters

    async def chunks(self) -> AsyncIterator[list[dict]]:
        """Stamped wire ticks, oldest first, after every IB page (maybe none yet: the
        other tick types have not reached those seconds). Each tick type's next page is
        asked while this one is merged and sent (one page ahead at most)."""
        types = list(dict.fromkeys(h.tick_type for h in self.holes))
        queues = {t: [h for h in self.holes if h.tick_type == t] for t in types}
        feeds = {t: _Ahead(self._feed(queues[t])) for t in types}
        open_ = dict(feeds)
        try:
            while open_:
                # the type furthest behind goes next; a type without holes left is done
                behind = min(open_, key=lambda t: _cursor(queues[t]))
                if not await open_[behind].step():
                    del open_[behind]
                horizon = min((_cursor(queues[t]) for t in open_), default=None)
                yield self._ready(horizon)
        finally:
            for feed in feeds.values():
                await feed.close()

    async def _feed(self, holes: list[Hole]) -> AsyncIterator[None]:
        """One tick type's holes, one page a step."""
        for hole in holes:
            hole.reached, hole.previous = hole.first, hole.lo - 1
            if hole.first > hole.last:
                hole.done = True
                continue
            try:
                if isinstance(self.contract, StreamError):
                    raise self.contract
                async for page in pages(
                    self.ib, self.contract, hole.what, hole.first, hole.last + 1, pacer=self.pacer
                ):
                    self.counters.requests += 1
                    hole.rows += page.to_pylist()
                    hole.reached = int(page.schema.metadata[b"reached"])
                    yield
            except StreamError as exc:
                log.info("history: %s of IB seconds %d-%d: %s", hole.what, hole.reached,
                         hole.last, exc.message)  # fmt: skip
                self.counters.missing.append(missing_entry(hole, exc))
            hole.reached, hole.done = hole.last + 1, True
            yield

    def _ready(self, horizon: int | None) -> list[dict]:
        """The fetched rows of IB seconds below `horizon` (None: all), merged and stamped."""
        taken: list[tuple[Hole, list[dict]]] = []
        for hole in self.holes:
            if not hole.rows:
                continue
            cut = len(hole.rows)
            if horizon is not None:
                cut = next((i for i, r in enumerate(hole.rows) if r["time"] >= horizon), cut)
            if cut:
                ready, hole.rows = hole.rows[:cut], hole.rows[cut:]
                taken.append((hole, self._unmatched(hole, ready)))
        rows = [(h, r) for h, rs in taken for r in rs]
        if not rows:
            return []
        order = _order(rows)
        seconds = np.array([rows[i][1]["time"] for i in order])
        starts = np.r_[True, seconds[1:] != seconds[:-1]]
        first = np.maximum.accumulate(np.where(starts, np.arange(len(seconds)), 0))
        wanted = seconds * NS + (np.arange(len(seconds)) - first)
        per_hole: dict[int, list[int]] = {}
        for place, i in enumerate(order):
            per_hole.setdefault(id(rows[i][0]), []).append(place)
        stamps = np.zeros(len(order), np.int64)
        for places in per_hole.values():
            hole = rows[order[places[0]]][0]
            want = [int(wanted[p]) for p in places]
            try:
                fitted = fill.fit_stamps(want, hole.previous, hole.hi)
            except ValueError:  # a busy last second: keep order, leave the hole's end
                log.warning("history: %d ticks do not fit inside their hole", len(want))
                fitted = fill.fit_stamps(want, hole.previous, 2**62)
            hole.previous = fitted[-1]
            stamps[places] = fitted
        ticks = [self._tick(*rows[i], int(stamps[p])) for p, i in enumerate(order)]
        ticks.sort(key=lambda t: t["recv_ns"])
        self.counters.from_ib += len(ticks)
        return ticks

    def _unmatched(self, hole: Hole, rows: list[dict]) -> list[dict]:
        """Rows of the hole's IB seconds no stored tick beside it accounts for (only its
        edge seconds can hold stored ticks: the store is read for those alone)."""
        edge = [r for r in rows if r["time"] in hole.edges]
        if not edge or self.root is None:
            return rows
        stored = fill.stored_keys(
            self.root,
            self.contract_id,
            hole.tick_type,
            edge[0]["time"],
            edge[-1]["time"],
            outside=(hole.lo, hole.hi),
        )
        table = pa.Table.from_pylist(rows, schema=SCHEMAS[hole.what])
        return fill.missing(table, hole.what, stored)

    def _tick(self, hole: Hole, row: dict, stamp: int) -> dict:
        tick: dict = {
            "contract_id": self.contract_id,
            "tick_type": hole.tick_type,
            "sequence": 0,
            "recv_ns": stamp,
        }
        for column, name in fill.MATCH[hole.what]:  # history column, wire (and store) field
            if row[column] is not None:
                tick[name] = row[column]
        for name in ("exchange", "conditions"):
            if row.get(name):
                tick[name] = row[name]
        tick["ib_time"] = row["time"]
        tick["source"] = "ib"
        return tick


class _Ahead:
    """One step of an async generator run ahead of its consumer (a task), so the next IB
    page is under way while the last one is merged and sent."""

    def __init__(self, steps: AsyncIterator[None]) -> None:
        self.steps = steps
        self.task: asyncio.Task | None = None

    def _next(self) -> None:
        self.task = asyncio.ensure_future(anext(self.steps, False))

    async def step(self) -> bool:
        """The next step done (False: there are none), the one after it started."""
        if self.task is None:
            self._next()
        assert self.task is not None
        # shielded: a cancel of the consumer must reach the consumer (close() ends the step)
        more = await asyncio.shield(self.task) is not False
        self.task = None
        if more:
            self._next()
        return more

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await self.task
        await self.steps.aclose()  # type: ignore[attr-defined]


def _cursor(holes: list[Hole]) -> int:
    """The first IB second of a tick type not fetched yet (its holes' seconds beyond)."""
    for hole in holes:
        if not hole.done:
            return hole.reached if hole.reached else hole.first
    return 2**62


def _order(rows: list[tuple[Hole, dict]]) -> np.ndarray:
    """`history_order` of the rows (tie-break `taken`), given in each type's own order."""
    n = len(rows)
    kind = np.array([KIND[h.what] for h, _ in rows], np.int8)
    ib_ns = np.array([r["time"] for _, r in rows], np.int64) * NS

    def column(name: str) -> np.ndarray:
        return np.array([r.get(name) for _, r in rows], dtype=float)

    bid_size, ask_size = column("bid_size"), column("ask_size")
    bid = np.where(bid_size == 0, np.nan, column("bid"))
    ask = np.where(ask_size == 0, np.nan, column("ask"))
    return history_order(
        np.zeros(n, np.int64), ib_ns, kind, (column("price"), column("size")),
        (bid, bid_size, ask, ask_size),
    )  # fmt: skip
