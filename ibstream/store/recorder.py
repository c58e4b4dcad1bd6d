"""The recorder: a member of the hub that writes every tick the hub numbers to the store.

The hub hands each tick over as it publishes it (one list append, nothing else on the live
path); every `flush_seconds` the ticks buffered since the last flush are built into part
files in a worker thread and renamed into place complete, so a crash loses at most one flush
interval, and the next run on the same store writes that window into `gaps`.

A store that cannot be written (disk full, directory gone) never stops live streaming: the
ticks wait in a bounded buffer and are retried at every flush; the server reports the
problem (`/health` degraded, an `info` to every stream, one log line) and its end. Past the
bound the oldest waiting ticks are dropped and their window becomes a `record_failed` gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow.fs as pafs

from ibstream.errors import ErrorCode, StreamError
from ibstream.model import ContractInfo, Tick, TickType
from ibstream.store import compact, crash, gaps, layout, parts, state
from ibstream.store.columns import StreamColumns

log = logging.getLogger(__name__)
DEFAULT_FLUSH_SECONDS = 1.0
DEFAULT_MAX_PENDING = 2_000_000  # ticks held while the store cannot be written (~0.5 GB)
# An idle recorder still rewrites its marker this often: a marker untouched for much longer
# counts as a crashed run on another host (state.FOREIGN_STALE_SECONDS).
MARKER_REFRESH_NS = 30_000_000_000
# Hours are compacted once they ended this long ago: no flush still writes into them.
COMPACT_AFTER_NS = 10_000_000_000


@dataclass(eq=False)
class _Batch:
    """One stream's ticks since the last flush; their sequences are contiguous from `first`."""

    contract: ContractInfo
    tick_type: TickType
    first: int
    ticks: StreamColumns


class Recorder:
    """Records every stream of one hub into the store at `root`."""

    def __init__(
        self,
        root: layout.StoreRoot,
        *,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        max_pending: int = DEFAULT_MAX_PENDING,
    ):
        if not flush_seconds > 0:
            raise ValueError(f"flush_seconds must be > 0, not {flush_seconds}")
        self.root = root
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.server_id = ""
        self.problem: str | None = None  # why the store cannot be written right now
        self.on_status: Callable[[str, str, dict | None], None] = lambda *args: None
        self.on_gaps: Callable[[], None] = lambda: None  # gap rows were written (backfill)
        self.ticks_written = 0
        self.parts_written = 0
        self.ticks_dropped = 0
        self.flushes = 0
        self._batches: dict[tuple[int, TickType], _Batch] = {}
        self._waiting: list[_Batch] = []  # taken from _batches, not written yet (oldest first)
        self._gaps: list[dict] = []  # gap rows not written yet
        self._outage: dict[str, tuple[int, int | None]] = {}  # stream -> (since ns, last seq)
        self.written_gaps: set[tuple] = set()  # gaps.IDENTITY of the rows noted or stored
        self.spared: set[str] = set()  # crashed runs whose markers its owner ends itself
        self._marker: state.RunMarker | None = None
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._compacting: asyncio.Task | None = None
        self._compacted_hour = -1  # the last hour boundary compaction ran after

    # -- the live path ----------------------------------------------------------------
    def add(self, key: tuple[int, TickType], contract: ContractInfo, tick: Tick, seq: int) -> None:
        """Called by the hub for every tick it numbers, in arrival order. A sequence that does
        not follow the batch's (a bus consumer's hole) starts a new batch: a batch's
        sequences are contiguous."""
        batch = self._batches.get(key)
        if batch is not None and seq != batch.first + len(batch.ticks.recv):
            self._waiting.append(batch)
            batch = None
        if batch is None:
            kept = StreamColumns(key[1].value)
            batch = self._batches[key] = _Batch(contract, key[1], seq, kept)
        batch.ticks.add(tick)

    def stream_closed(self, contract_id: int, tick_type: TickType) -> None:
        """The hub cancelled a stream: a crash after its last flush loses nothing of it."""
        if self._marker is not None:
            mark = self._marker.streams.get(f"{contract_id}:{tick_type.value}")
            if mark is not None:
                mark.open = False

    def connection_changed(
        self, status: str, streams: list[tuple[int, TickType, int]], at_ns: int | None = None
    ) -> None:
        """IB went away (`ib_disconnected`) or came back (`resumed`) now (or at `at_ns`, when
        the news is read later, e.g. from the bus): the window between is an
        `ib_disconnected` gap of every stream held then (each with its last sequence)."""
        now = at_ns or time.time_ns()
        if status == "ib_disconnected":
            for con_id, kind, last in streams:
                self._outage.setdefault(f"{con_id}:{kind.value}", (now, last))
        elif status == "resumed":
            for name, (since, last) in self._outage.items():
                con_id, kind = name.split(":")
                self.note_gap(int(con_id), kind, since, now, "ib_disconnected", last)
            self._outage.clear()

    # -- lifetime -------------------------------------------------------------------------
    async def start(self, server_id: str) -> None:
        """Check the store can be written, record crashed runs' windows as gaps, then flush
        every `flush_seconds`. A store that cannot be used raises StreamError."""
        self.server_id = server_id
        self._marker = state.RunMarker(server_id, time.time_ns())
        await asyncio.to_thread(self._open)
        self._compact_closed_hours()  # what a crashed run left, while recording starts
        self._task = asyncio.create_task(self._run(), name="ibstream-recorder")

    @property
    def marker(self) -> state.RunMarker | None:
        """This run's crash marker (what is on disk per stream, which streams are open)."""
        return self._marker

    async def stop(self, *, keep_marker: bool = False) -> None:
        """Clean stop: write what is buffered; the marker goes only when all of it is on disk
        (`keep_marker`: it stays, for a recorder that resumes this run later)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._compacting is not None:
            with contextlib.suppress(Exception):
                await self._compacting  # never leave a half-done swap to the next start
        await self.flush()
        if self.problem is None and self._marker is not None and not keep_marker:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(state.remove, self.root, self._marker)

    def status(self) -> dict:
        return {
            "store": self.root.uri,
            "ok": self.problem is None,
            "problem": self.problem,
            "flush_seconds": self.flush_seconds,
            "ticks_written": self.ticks_written,
            "ticks_waiting": self.pending(),
            "ticks_dropped": self.ticks_dropped,
            "parts_written": self.parts_written,
        }

    def pending(self) -> int:
        return sum(len(b.ticks) for b in (*self._waiting, *self._batches.values()))

    # -- flushing -------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)  # a period, not a synchronisation
            # shielded: stop() cancels this loop, never a write half done; its own flush
            # waits for the lock this one holds, so the two never write at once
            await asyncio.shield(self.flush())
            self._compact_closed_hours()

    def _compact_closed_hours(self) -> None:
        """Once per hour (and at start-up, also after a crash): merge each partition's parts
        of the hours that ended, in a worker thread, while recording goes on."""
        now = time.time_ns()
        hour = (now - COMPACT_AFTER_NS) // 3_600_000_000_000
        busy = self._compacting is not None and not self._compacting.done()
        if hour == self._compacted_hour or busy or self.problem is not None:
            return
        self._compacted_hour = hour
        self._compacting = asyncio.create_task(self._compact(hour * 3_600_000_000_000))

    async def _compact(self, before_ns: int) -> None:
        try:
            report = await asyncio.to_thread(compact.compact, self.root, before_ns=before_ns)
        except Exception as exc:  # noqa: BLE001 - the recording goes on; next hour retries
            log.warning("compacting %s failed (%s); the parts stay as they are", self.root.uri, exc)
            return
        if report.hours:
            log.info("compacted %d partition-hours of %s", report.hours, self.root.uri)

    async def flush(self) -> None:
        """Write every buffered tick now (in a worker thread; the loop keeps streaming)."""
        async with self._lock:
            self._waiting.extend(self._batches.values())
            self._batches = {}
            idle = not self._waiting and not self._gaps and self._marker is not None
            if idle and time.time_ns() - self._marker.flushed_ns < MARKER_REFRESH_NS:
                return
            batches, gaps = self._waiting, self._gaps
            self._waiting, self._gaps = [], []
            new_gaps = bool(gaps)  # _write empties the list once the rows are on disk
            try:
                await asyncio.to_thread(self._write, batches, gaps)
            except Exception as exc:  # noqa: BLE001 - any write failure: keep streaming
                self._waiting = [b for b in batches if b.ticks] + self._waiting
                self._gaps = gaps + self._gaps
                self._trim()
                self._failed(exc)
                return
            self.flushes += 1
            if new_gaps:
                self.on_gaps()
            if self.problem is not None:
                log.warning("recording to %s works again; nothing waiting was lost", self.root.uri)
                self.problem = None
                self.on_status("record_resumed", f"recording to {self.root.uri} resumed", None)

    def _write(self, batches: list[_Batch], gaps: list[dict]) -> None:
        """Runs in a worker thread. A batch is emptied once its parts are on disk, so a
        failure part-way retries only what was not written."""
        marker = self._marker
        assert marker is not None
        self._check_root()
        for batch in batches:
            if not batch.ticks:
                continue
            kind = batch.tick_type.value
            built = parts.build_column_parts(
                batch.contract, kind, batch.ticks, batch.first, self.server_id
            )
            contract = batch.contract.to_dict()
            for part in built:
                parts.write_part(self.root, part, self.server_id, contract)
                self.parts_written += 1
            self.ticks_written += len(batch.ticks)
            name = f"{batch.contract.contract_id}:{kind}"
            mark = marker.streams.setdefault(
                name, state.StreamMark(batch.contract.contract_id, kind)
            )
            mark.last_ns = built[-1].last_ns
            mark.last_sequence = batch.first + len(batch.ticks) - 1
            mark.open = True
            batch.ticks = StreamColumns(kind)
        if gaps:
            self._write_gaps(gaps)
            gaps.clear()
        marker.flushed_ns = time.time_ns()
        state.save(self.root, marker)

    def _trim(self) -> None:
        """Keep at most `max_pending` ticks waiting: drop the oldest, as a `record_failed` gap."""
        excess = self.pending() - self.max_pending
        for batch in self._waiting:
            if excess <= 0:
                break
            cut = min(excess, len(batch.ticks))
            self.note_gap(
                batch.contract.contract_id,
                batch.tick_type.value,
                batch.ticks.recv[0],
                batch.ticks.recv[cut - 1],
                "record_failed",
                batch.first - 1,
                f"{cut} ticks could not be written ({self.problem})",
            )
            batch.ticks.drop_first(cut)
            batch.first += cut
            self.ticks_dropped += cut
            excess -= cut

    def _failed(self, exc: Exception) -> None:
        problem = f"cannot write to the tick store {self.root.uri}: {exc}"
        if self.problem is None:
            log.error(
                "%s; live streaming goes on and up to %d ticks wait in memory: free disk space "
                "or restore the directory, and recording resumes by itself",
                problem,
                self.max_pending,
            )
            details = {"store": self.root.uri, "ticks_waiting": self.pending()}
            self.on_status("record_failed", problem, details)
        self.problem = problem

    # -- the store --------------------------------------------------------------------
    def _open(self) -> None:
        """Create the store (or check it), record crashed runs as gaps, write our marker."""
        root, marker = self.root, self._marker
        assert marker is not None
        usable_store(root)
        try:
            compact.recover(root)  # a compaction or a part a crash left half done
            for run in state.crashed_runs(root):
                if run.server_id in self.spared:
                    continue
                if rows := crash.gaps_of(root, run, marker.started_ns):
                    gaps.write(root, self.server_id, rows)
                state.remove(root, run)
            state.save(root, marker)
        except OSError as exc:
            raise _unusable(root, str(exc)) from exc

    def _check_root(self) -> None:
        """A local store directory that vanished (an unmounted disk, a removed folder) is
        not silently created again: the ticks wait until it is back."""
        if self.root.local and self.root.fs.get_file_info(self.root.base).type != (
            pafs.FileType.Directory
        ):
            raise FileNotFoundError(f"the directory {self.root.base} is gone")

    def note_gap(
        self,
        contract_id: int,
        tick_type: str,
        start: int,
        end: int,
        reason: str,
        after_sequence: int | None,
        message: str | None = None,
    ) -> None:
        """A gap row of this run, written with the next flush (also a bus recorder's hole);
        none where the store has that gap already (`written_gaps`: a resumed run's)."""
        row = gaps.row(
            contract_id, tick_type, start, end, reason, self.server_id, after_sequence, message
        )
        identity = tuple(row[name] for name in gaps.IDENTITY)
        if identity not in self.written_gaps:
            self.written_gaps.add(identity)
            self._gaps.append(row)

    def _write_gaps(self, rows: list[dict]) -> None:
        gaps.write(self.root, self.server_id, rows)


def usable_store(root: layout.StoreRoot) -> None:
    """Make sure `root` can hold a recording (created if it is a new local directory), or
    raise StreamError saying why not: the server checks this before it connects to IB."""
    info = root.fs.get_file_info(root.base) if root.base else None
    if info is not None and info.type == pafs.FileType.File:
        raise _unusable(root, "it is a file, not a directory")
    try:
        if root.local and info is not None and info.type == pafs.FileType.NotFound:
            root.fs.create_dir(root.base, recursive=True)
        probe = root.path(layout.STATE, f".probe-{time.time_ns()}")
        layout.write_small(root, probe, b"")
        root.fs.delete_file(probe)
    except OSError as exc:
        raise _unusable(root, str(exc)) from exc


def _unusable(root: layout.StoreRoot, why: str) -> StreamError:
    return StreamError(
        ErrorCode.INVALID_MESSAGE,
        f"cannot record to {root.uri}: {why}; give --record (`record --to`) a directory this "
        "user can write (or an s3:// URI)",
        details={"store": root.uri},
    )
