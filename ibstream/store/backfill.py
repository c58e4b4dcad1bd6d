"""Backfill (`--backfill`, on with `--record`): the store's open gaps filled from IB's history.

A task beside the recorder, never on the live path: for each gap the store holds as `open`
(server_restarted, ib_disconnected, not_buffered) it waits for the stream's live ticks to
resume (the hole runs until the first live tick after the gap: a restarted server subscribes
a little after its gap was written), fetches IB's historical ticks of the whole IB seconds
from just before the gap to that first live tick (`ib.history.fetch_ticks`, paced), stores
those no stored tick accounts for (`fill`) as parts with `source = "historical"`, and writes
the gap's new status as a row that supersedes the old one (`gaps.revised`): `filled`,
`partly_filled` (IB stopped part-way: the message says from where) or `unfillable` (IB's
code and reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pyarrow as pa
import pyarrow.dataset as ds

from ibstream.errors import ErrorCode, StreamError
from ibstream.ib.history import fetch_ticks
from ibstream.ib.pacing import Pacer
from ibstream.model import ContractInfo
from ibstream.store import fill, gaps, layout, parts
from ibstream.store.recorder import Recorder

log = logging.getLogger(__name__)
FILLABLE = ("server_restarted", "ib_disconnected", "not_buffered")
FOLLOW_SECONDS = 60.0  # how long a gap waits for its stream's live ticks to resume
POLL_SECONDS = 1.0  # a background period (IB back? the stream's first live tick on disk?)
RESCAN_SECONDS = 60.0  # gaps left open (IB down) are tried again this often


def open_gaps(root: layout.StoreRoot) -> list[dict]:
    """The store's fillable gaps whose latest status is `open`, oldest first; times in ns."""
    if root.fs.get_file_info(root.path(layout.GAPS)).type.name == "NotFound":
        return []
    table = gaps.latest(layout.gaps_dataset(root).to_table(columns=layout.GAP_SCHEMA.names))
    table = table.filter((ds.field("status") == "open") & ds.field("reason").isin(FILLABLE))
    for name in ("start", "end"):
        table = table.set_column(
            table.schema.get_field_index(name), name, table[name].cast("int64")
        )
    return sorted(table.to_pylist(), key=lambda g: (g["start"], g["contract_id"]))


class Backfill:
    """Fills the gaps of `recorder`'s store through `source` (an IBSource: `ib`,
    `available`, `wait_connected`, `qualified`)."""

    def __init__(self, recorder: Recorder, source: object, pacer: Pacer | None = None):
        self.recorder = recorder
        self.source = source
        # one per IB connection (the pacing rules are its): the source's, shared with history
        self.pacer = pacer or getattr(source, "pacer", None) or Pacer()
        self.counts = {"filled": 0, "partly_filled": 0, "unfillable": 0}
        self.ticks_added = 0
        self.pending = 0  # open gaps of the last scan not settled yet
        self.scans = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ibstream-backfill")

    def wake(self) -> None:
        """New gap rows were written: scan again."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def status(self) -> dict:
        return {
            "running": self._task is not None and not self._task.done(),
            "scans": self.scans,
            "gaps_pending": self.pending,
            "gaps": dict(self.counts),
            "ticks_added": self.ticks_added,
        }

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._scan()
            except Exception:  # noqa: BLE001 - the recording goes on; the next scan retries
                log.exception("backfill: a scan of %s failed", self.recorder.root.uri)
            self.scans += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RESCAN_SECONDS)

    async def _scan(self) -> None:
        todo = await asyncio.to_thread(open_gaps, self.recorder.root)
        self.pending = len(todo)
        for gap in todo:
            if await self._fill(gap):
                self.pending -= 1

    async def _fill(self, gap: dict) -> bool:
        """Settle one gap; False when it has to wait for IB (tried again later)."""
        con_id, kind = gap["contract_id"], gap["tick_type"]
        what = fill.WHAT.get(kind)
        if what is None:
            await self._settle(gap, "unfillable", f"IB has no history of {kind} ticks", 0)
            return True
        if not self.source.available:  # type: ignore[attr-defined]
            with contextlib.suppress(StreamError):
                await self.source.wait_connected(RESCAN_SECONDS)  # type: ignore[attr-defined]
            if not self.source.available:  # type: ignore[attr-defined]
                return False  # the next scan tries again
        try:
            info, contract = await self.source.qualified(con_id)  # type: ignore[attr-defined]
        except StreamError as exc:
            if exc.code == ErrorCode.CONNECTION_ERROR:
                return False
            await self._settle(gap, "unfillable", f"IB cannot look up {con_id}: {exc.message}", 0)
            return True
        end_ns, last_second = await self._resumed(gap)
        lo, hi = gap["start"] // fill.NS - 1, last_second  # IB seconds, inclusive
        # a wait for the wall clock: every tick of second `hi` has arrived live by then
        await asyncio.sleep(max(0.0, hi + 2 - time.time()))
        await self.recorder.flush()
        log.info(
            "backfill: asking IB for %s %s of IB seconds %d-%d (gap %s from %d)",
            con_id,
            what,
            lo,
            hi,
            gap["reason"],
            gap["start"],
        )
        error: StreamError | None = None
        try:
            history = await fetch_ticks(
                self.source.ib,  # type: ignore[attr-defined]
                contract,
                what,
                lo,
                hi + 1,
                pacer=self.pacer,
            )
        except StreamError as exc:
            if exc.code in (ErrorCode.CONNECTION_ERROR, ErrorCode.STREAM_TIMEOUT):
                return False
            error, history = exc, getattr(exc, "partial", None)
        added = 0
        if history is not None and history.num_rows:
            added = await asyncio.to_thread(self._store, gap, info, what, history, lo, hi, end_ns)
        pages = int((history.schema.metadata or {}).get(b"requests", 0)) if history else 0
        if error is None:
            status = "filled"
            message = f"filled from IB's history ({added} ticks added, {pages} requests)"
        elif history is not None and history.num_rows:
            reached = history["time"][-1].as_py()
            status = "partly_filled"
            message = (
                f"{added} ticks added up to IB second {reached}; IB second {reached + 1} to "
                f"{hi} remains: {error.message}"
            )
        else:
            status, message = "unfillable", error.message
        await self._settle(gap, status, message, added, end_ns)
        return True

    async def _resumed(self, gap: dict) -> tuple[int, int]:
        """Where the stream's live ticks resumed after the gap (receive ns, IB second); the
        gap's own end when none came within FOLLOW_SECONDS of it."""
        root, key = self.recorder.root, (gap["contract_id"], gap["tick_type"])
        while True:
            await self.recorder.flush()
            found = await asyncio.to_thread(fill.resumed_at, root, *key, gap["end"])
            if found is not None:
                return found
            if time.time_ns() > gap["end"] + FOLLOW_SECONDS * fill.NS:
                return gap["end"], gap["end"] // fill.NS
            await asyncio.sleep(POLL_SECONDS)

    def _store(
        self,
        gap: dict,
        info: ContractInfo,
        what: str,
        history: pa.Table,
        lo: int,
        hi: int,
        end_ns: int,
    ) -> int:
        """Runs in a worker thread: the ticks no stored tick accounts for, as historical parts."""
        con_id, kind = gap["contract_id"], gap["tick_type"]
        stored = fill.stored_keys(self.recorder.root, con_id, kind, lo, hi)
        rows = fill.missing(history, what, stored)
        if not rows:
            return 0
        recv = fill.receive_times([r["time"] for r in rows], gap["start"], end_ns)
        ticks = fill.ticks_of(rows, what, con_id, kind, recv)
        writer = self.recorder.server_id
        for part in parts.build_parts(info, kind, ticks, [0] * len(ticks), writer, "historical"):
            parts.write_part(self.recorder.root, part, writer, info.to_dict())
        self.ticks_added += len(ticks)
        return len(ticks)

    async def _settle(
        self, gap: dict, status: str, message: str, added: int, end: int | None = None
    ) -> None:
        row = gaps.revised(gap, status, message, added, end)
        await asyncio.to_thread(gaps.write, self.recorder.root, self.recorder.server_id, [row])
        self.counts[status] += 1
        log.info(
            "backfill: gap %s %s %s from %d: %s (%s)",
            gap["contract_id"],
            gap["tick_type"],
            gap["reason"],
            gap["start"],
            status,
            message,
        )
