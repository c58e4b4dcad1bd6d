"""The holes of a history request filled from IB: paged, merged across tick types, stamped.

The holes of the requested tick types that overlap in IB seconds are fetched together (one
`Group`), page by page (`ib.history.pages`, on the connection's one `Pacer`), each tick type
at most `AHEAD_PAGES` pages ahead of the merge, so memory holds a few pages per tick type
whatever the range. Rows of the IB seconds every tick type has
complete are merged in `history.order`'s order (tie-break `taken`), stamped with receive
times strictly inside their hole (IB's second plus the row's place in it, `fill.fit_stamps`)
and handed on. At a hole's edge to stored ticks the edge seconds are asked too and the rows
a stored tick accounts for dropped (`fill.missing`: never twice, never dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ibstream.errors import StreamError
from ibstream.history.order import history_order
from ibstream.ib.history import pages
from ibstream.server.tick_columns import SCHEMA, Ticks, labels_of
from ibstream.store import fill
from ibstream.store.layout import StoreRoot

log = logging.getLogger(__name__)
NS = fill.NS
KIND = {"BID_ASK": 0, "TRADES": 1, "MIDPOINT": 2}
AHEAD_PAGES = 4  # IB pages a tick type may fetch ahead of the merge
_TEXTS = {"TRADES": (("exchange", "exchange"), ("conditions", "conditions"))}


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
    pages: list[pa.Table] = field(default_factory=list)  # fetched, not yet handed on
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

    async def chunks(self) -> AsyncIterator[Ticks]:
        """Stamped wire ticks, oldest first, after every IB page (maybe none yet: the
        other tick types have not reached those seconds). Each tick type's next pages are
        asked while this one is merged and sent (`_Ahead`)."""
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

    async def _feed(self, holes: list[Hole]) -> AsyncIterator[list[Change]]:
        """One tick type's holes, one page a step. A step is the changes it makes to the holes,
        applied when the merge takes it (`_Ahead.step`): what a merge sees never depends on
        how far ahead the fetching ran, so an answer's chunks are the same every time."""
        changes: list[Change] = []
        for hole in holes:
            changes.append(functools.partial(_begin, hole))
            if hole.first > hole.last:
                changes.append(functools.partial(_end, hole))
                continue
            try:
                if isinstance(self.contract, StreamError):
                    raise self.contract
                async for page in pages(
                    self.ib, self.contract, hole.what, hole.first, hole.last + 1, pacer=self.pacer
                ):
                    changes.append(functools.partial(_took, hole, page, self.counters))
                    yield changes
                    changes = []
            except StreamError as exc:
                changes.append(functools.partial(_refused, hole, exc, self.counters))
            changes.append(functools.partial(_end, hole))
            yield changes
            changes = []
        if changes:  # empty holes at the end
            yield changes

    def _ready(self, horizon: int | None) -> Ticks:
        """The fetched rows of IB seconds below `horizon` (None: all), merged and stamped:
        columns throughout (a page's ticks are never Python objects again)."""
        taken: list[tuple[Hole, pa.Table]] = []
        for hole in self.holes:
            if not hole.pages:
                continue
            rows = pa.concat_tables(hole.pages) if len(hole.pages) > 1 else hole.pages[0]
            cut = rows.num_rows
            if horizon is not None:
                times = rows.column("time").to_numpy()
                cut = int(np.searchsorted(times, horizon, side="left"))
            hole.pages = [rows.slice(cut)] if cut < rows.num_rows else []
            if cut:
                ready = self._unmatched(hole, rows.slice(0, cut))
                if ready.num_rows:
                    taken.append((hole, ready))
        if not taken:
            return Ticks.empty()
        rows = _Rows(taken)
        order = rows.order()
        seconds = rows.time[order]
        starts = np.r_[True, seconds[1:] != seconds[:-1]]
        first = np.maximum.accumulate(np.where(starts, np.arange(len(seconds)), 0))
        wanted = seconds * NS + (np.arange(len(seconds)) - first)
        which = rows.hole[order]
        stamps = np.zeros(len(order), np.int64)
        for h, (hole, _) in enumerate(taken):
            places = np.flatnonzero(which == h)
            want = wanted[places]
            try:
                fitted = fill.fit_stamps_array(want, hole.previous, hole.hi)
            except ValueError:  # a busy last second: keep order, leave the hole's end
                log.warning("history: %d ticks do not fit inside their hole", len(want))
                fitted = fill.fit_stamps_array(want, hole.previous, 2**62)
            hole.previous = int(fitted[-1])
            stamps[places] = fitted
        ticks = rows.ticks(self.contract_id, order, stamps)
        self.counters.from_ib += len(ticks)
        return ticks

    def _unmatched(self, hole: Hole, rows: pa.Table) -> pa.Table:
        """Rows of the hole's IB seconds no stored tick beside it accounts for (only its
        edge seconds can hold stored ticks: the store is read for those alone)."""
        if not hole.edges or self.root is None:
            return rows
        times = rows.column("time").to_numpy()
        edge = times[np.isin(times, list(hole.edges))]
        if not len(edge):
            return rows
        before, after = fill.stored_keys(
            self.root,
            self.contract_id,
            hole.tick_type,
            int(edge[0]),
            int(edge[-1]),
            split_ns=hole.lo - 1,  # stored before the hole: matched from its seconds' front
            outside=(hole.lo, hole.hi),
        )
        return rows.filter(pa.array(fill.missing_mask(rows, hole.what, before, after)))


class _Rows:
    """The ready rows of several holes (tick types) as one set of numpy columns, in the
    holes' order, each hole's rows in IB's order."""

    def __init__(self, taken: list[tuple[Hole, pa.Table]]) -> None:
        self.taken = taken
        sizes = [t.num_rows for _, t in taken]
        self.hole = np.repeat(np.arange(len(taken)), sizes)
        self.kind = np.repeat(np.array([KIND[h.what] for h, _ in taken], np.int8), sizes)
        self.time = self._column("time", np.int64, 0)

    def _column(self, name: str, dtype: type, fill_value: object) -> np.ndarray:
        parts = [
            t.column(name).to_numpy(zero_copy_only=False).astype(dtype)
            if name in t.column_names
            else np.full(t.num_rows, fill_value, dtype)
            for _, t in self.taken
        ]
        return np.concatenate(parts)

    def order(self) -> np.ndarray:
        """`history_order` of the rows (tie-break `taken`)."""
        column = functools.partial(self._column, dtype=np.float64, fill_value=np.nan)
        bid_size, ask_size = column("bid_size"), column("ask_size")
        bid = np.where(bid_size == 0, np.nan, column("bid"))
        ask = np.where(ask_size == 0, np.nan, column("ask"))
        return history_order(
            np.zeros(len(self.kind), np.int64), self.time * NS, self.kind,
            (column("price"), column("size")), (bid, bid_size, ask, ask_size),
        )  # fmt: skip

    def ticks(self, contract_id: int, order: np.ndarray, stamps: np.ndarray) -> Ticks:
        """The rows in `order` with receive stamps `stamps`, as wire ticks, oldest first."""
        columns: dict[str, object] = {"contract_id": contract_id, "source": "ib"}
        for hole, _ in self.taken:
            for column, name in (*fill.MATCH[hole.what], *_TEXTS.get(hole.what, ())):
                if name not in columns:
                    columns[name] = pa.concat_arrays(
                        [_array(t, column, SCHEMA.field(name).type) for _, t in self.taken]
                    )
        for name in ("exchange", "conditions"):
            if name in columns:  # an empty text is no text
                text = columns[name]
                columns[name] = pc.if_else(pc.equal(text, ""), None, text)
        by_time = np.argsort(stamps, kind="stable")  # merged order, then by stamp
        take = order[by_time]
        names = list(dict.fromkeys(h.tick_type for h, _ in self.taken))
        code = np.array([names.index(h.tick_type) for h, _ in self.taken], np.int8)
        labels = labels_of(code[self.hole[take]], names)
        picked = {
            k: (v.take(pa.array(take)) if isinstance(v, pa.Array) else v)
            for k, v in columns.items()
        }
        picked["ib_time"] = self.time[take]
        picked["recv_ns"] = stamps[by_time]
        return Ticks.from_columns(len(take), labels, picked)


Change = Callable[[], None]


def _begin(hole: Hole) -> None:
    hole.reached, hole.previous = hole.first, hole.lo - 1


def _took(hole: Hole, page: pa.Table, counters: Counters) -> None:
    counters.requests += 1
    if page.num_rows:
        hole.pages.append(page)
    hole.reached = int(page.schema.metadata[b"reached"])


def _refused(hole: Hole, exc: StreamError, counters: Counters) -> None:
    log.info("history: %s of IB seconds %d-%d: %s", hole.what, hole.reached, hole.last,
             exc.message)  # fmt: skip
    counters.missing.append(missing_entry(hole, exc))


def _end(hole: Hole) -> None:
    hole.reached, hole.done = hole.last + 1, True


class _Ahead:
    """An async generator run by its own task up to `depth` steps ahead of its consumer, so a
    tick type's next IB pages are under way while the pages before are merged and sent (the
    merge and the answer's writes hold the loop for milliseconds a page)."""

    def __init__(self, steps: AsyncIterator[list[Change]], depth: int = AHEAD_PAGES) -> None:
        self.steps = steps
        self.done: asyncio.Queue[list[Change] | BaseException] = asyncio.Queue(depth)
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            async for changes in self.steps:
                await self.done.put(changes)
        except Exception as exc:  # noqa: BLE001 - raised again by the consumer's step
            await self.done.put(exc)
            return
        await self.done.put(StopAsyncIteration())

    async def step(self) -> bool:
        """The next step done and its changes applied (False: there are none)."""
        outcome = await self.done.get()
        if isinstance(outcome, StopAsyncIteration):
            return False
        if isinstance(outcome, BaseException):
            raise outcome
        for change in outcome:
            change()
        return True

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.steps.aclose()  # type: ignore[attr-defined]


def _array(table: pa.Table, column: str, type_: pa.DataType) -> pa.Array:
    """A page's column as one array (nulls: a kind without it)."""
    if column in table.column_names:
        return table.column(column).combine_chunks()
    return pa.nulls(table.num_rows, type_)


def _cursor(holes: list[Hole]) -> int:
    """The first IB second of a tick type not fetched yet (its holes' seconds beyond)."""
    for hole in holes:
        if not hole.done:
            return hole.reached if hole.reached else hole.first
    return 2**62
