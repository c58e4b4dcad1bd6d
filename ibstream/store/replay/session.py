"""One subscribe's replay: its streams read, merged and sent on its own clock.

At a finite speed a row goes out when (its receive time - the replay's start) / speed has
passed since the replay began (so the sessions of several subscribes from one start keep
their recorded offsets; a start long before the first row waits at most one second, a
resumed session starts at its first row); at `speed=None` (max) as fast as the client reads.
Either way the subscriber's queue is never overfilled: before each slice of rows the
session waits until the queue is half empty (`Subscriber.room`), so a slow client slows
its replay instead of being dropped, and memory stays bounded by the queue and one read
batch per stream. With `loop`, each pass after the first is shifted in time and sequence
to follow the one before it, so clients see one session that goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ibstream.errors import ErrorCode, StreamError
from ibstream.model import ContractInfo, TickType
from ibstream.protocol.times import iso_ns
from ibstream.store.replay.gaps import gap_info, recorded_gaps
from ibstream.store.replay.reader import Merge, Window, encode_rows, stream_batches

if TYPE_CHECKING:
    from ibstream.server.stream import StreamHandle
    from ibstream.server.subscriber import Subscriber
    from ibstream.store.replay.hub import ReplayHub

log = logging.getLogger(__name__)
SLICE_ROWS = 1_000  # rows sent per wait for room (and per loop pass at full speed)
LOOP_PAUSE_NS = 1_000_000  # recorded time between the end of a pass and the next


class Session:
    """The streams of one subscribe (one owner, one contract, one start), replayed together."""

    def __init__(self, hub: ReplayHub, owner: Subscriber, contract: ContractInfo, start_ns: int):
        self.hub = hub
        self.owner = owner
        self.contract = contract
        self.start_ns = start_ns
        self.handles: dict[TickType, StreamHandle] = {}
        self.before: dict[TickType, int] = {}  # start_sequence of each stream
        self.resume: dict[TickType, int] = {}  # resume positions the client sent
        self.task: asyncio.Task[None] | None = None
        self.sent = 0
        self.position_ns: int | None = None  # receive time of the last row sent
        self.clock: tuple[float, int] | None = None  # (loop time, receive time) of row one
        self.finishing = False
        self._gaps: list[deque[dict]] = []  # per stream of a pass: recorded gaps still to tell

    @property
    def active(self) -> bool:
        return any(handle.active for handle in self.handles.values())

    def add(self, handle: StreamHandle) -> None:
        key = (self.contract.contract_id, handle.tick_type)
        self.handles[handle.tick_type] = handle
        self.before[handle.tick_type] = self.hub.recording.sequence_before(key, self.start_ns)

    def launch(self) -> None:
        if self.active and self.task is None:
            self.task = asyncio.create_task(self._run(), name=f"replay {self.contract.symbol}")

    def stop(self) -> None:
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    async def _run(self) -> None:
        try:
            types = list(self.handles)
            time_shift, seq_shift = 0, [0] * len(types)
            while True:
                sent, span, runs = await self._pass(types, time_shift, seq_shift)
                if not self.hub.loop or not sent or not self.active:
                    break
                time_shift += span + LOOP_PAUSE_NS
                seq_shift = [shift + run for shift, run in zip(seq_shift, runs, strict=True)]
            self._complete()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failure of ours ends these streams, not the server
            log.exception("replay of %s failed", self.contract.symbol)
            error = StreamError(
                ErrorCode.INTERNAL_ERROR, f"the replay failed ({type(exc).__name__}: {exc})"
            )
            for handle in list(self.handles.values()):
                if handle.active:
                    handle.fail(error)
        finally:
            self.hub.ended(self)

    async def _pass(
        self, types: list[TickType], time_shift: int, seq_shift: list[int]
    ) -> tuple[int, int, list[int]]:
        """One pass over the window: rows sent, their recorded time span, and per stream
        how many sequences it covered (what the next pass is shifted by)."""
        hub, cid = self.hub, self.contract.contract_id
        sources = [
            stream_batches(
                hub.recording,
                (cid, tick_type),
                Window(self.start_ns, hub.end_ns, self.resume.get(tick_type, -1)),
            )
            for tick_type in types
        ]
        gaps = recorded_gaps(hub.recording.root, cid, self.start_ns, hub.end_ns)
        self._gaps = [gaps.get(tick_type, deque()) for tick_type in types]
        first_seq: list[int | None] = [None] * len(types)
        last_seq = [0] * len(types)
        first_ns = last_ns = None
        sent = 0
        async for rows, index in Merge(sources).chunks():
            for i in np.unique(index).tolist():
                mine = rows.column("sequence").to_numpy()[index == i]
                first_seq[i] = int(mine[0]) if first_seq[i] is None else first_seq[i]
                last_seq[i] = int(mine[-1])
            times = rows.column("time").cast(pa.int64()).to_numpy() + time_shift
            first_ns = int(times[0]) if first_ns is None else first_ns
            last_ns = int(times[-1])
            await self._send(rows, index, times, types, (time_shift, seq_shift))
            sent += len(times)
            if not self.active:
                break
        runs = [
            0 if f is None else last - f + 1 for f, last in zip(first_seq, last_seq, strict=True)
        ]
        span = 0 if first_ns is None or last_ns is None else last_ns - first_ns
        return sent, span, runs

    async def _send(
        self,
        rows: pa.Table,
        index: np.ndarray,
        times: np.ndarray,
        types: list[TickType],
        shifts: tuple[int, list[int]],
    ) -> None:
        """Hand the rows to their streams on this session's clock, waiting for room; each
        slice is encoded as it goes out, so a chunk is held in Arrow's columns only."""
        hub, owner = self.hub, self.owner
        loop = asyncio.get_running_loop()
        handles = [self.handles[t] for t in types]
        step = max(1, min(SLICE_ROWS, owner.queue_size // 4))
        i, n = 0, len(times)
        while i < n and self.active:
            j = min(n, i + step)
            if hub.speed is not None:
                if self.clock is None:  # the replay's clock starts at its start time
                    self.clock = (loop.time(), self._origin(int(times[i])))
                wall0, rec0 = self.clock
                due = (times[i:j] - rec0) / (hub.speed * 1e9)
                ready = int(np.searchsorted(due, loop.time() - wall0, "right"))
                if not ready:
                    await asyncio.sleep(float(due[0]) - (loop.time() - wall0))
                    continue
                j = i + ready
            await owner.room()
            cid = self.contract.contract_id
            entries = encode_rows(rows.slice(i, j - i), index[i:j], cid, types, *shifts)
            if self._gap_due(int(times[j - 1]) - shifts[0]):
                self._deliver_telling_gaps(entries, index[i:j], handles, shifts[0])
            else:
                for owner_of, entry in zip(index[i:j].tolist(), entries, strict=True):
                    handles[owner_of].deliver(entry)
            self.sent += j - i
            hub.ticks_out += j - i
            self.position_ns = int(times[j - 1])
            i = j
            if hub.speed is None:
                await asyncio.sleep(0)  # let every other connection have the loop too

    def _gap_due(self, last_ns: int) -> bool:
        """Whether a recorded gap of some stream ends by `last_ns` (recorded time)."""
        return any(queue and queue[0]["end"] <= last_ns for queue in self._gaps)

    def _deliver_telling_gaps(
        self, entries: list, index: np.ndarray, handles: list, time_shift: int
    ) -> None:
        """Deliver rows one by one, each stream's recorded gaps told before its first row
        after them."""
        for owner_of, entry in zip(index.tolist(), entries, strict=True):
            queue = self._gaps[owner_of]
            while queue and queue[0]["end"] <= entry.recv_ns - time_shift:
                handles[owner_of].notify("gap", *gap_info(queue.popleft()))
            handles[owner_of].deliver(entry)

    def _origin(self, first_ns: int) -> int:
        """The recorded time the clock starts from (see the module's docstring)."""
        if self.resume:
            return first_ns
        return max(self.start_ns, first_ns - int(self.hub.speed * 1e9))  # type: ignore[operator]

    def _complete(self) -> None:
        """`info` replay_completed, then `complete` replay_completed, on each open stream."""
        self.finishing = True
        end = "the end of the recording" if self.hub.end_ns is None else iso_ns(self.hub.end_ns)
        for n, (tick_type, handle) in enumerate(list(self.handles.items())):
            if not handle.active:
                continue
            for gap in self._gaps[n] if n < len(self._gaps) else ():  # after its last row
                handle.notify("gap", *gap_info(gap))
            text = (
                f"all {handle.count} recorded {tick_type.value} ticks of {self.contract.symbol} "
                f"from {iso_ns(self.start_ns)} to {end} were sent"
                if handle.count
                else f"this recording has no {tick_type.value} ticks of {self.contract.symbol} "
                f"from {iso_ns(self.start_ns)} to {end}"
            )
            details = {"ticks": handle.count, "final_sequence": handle.last_sequence}
            handle.notify("replay_completed", text, details)
            handle.owner.complete(handle, "replay_completed")

    def describe(self) -> dict:
        return {
            "client": self.owner.client,
            "contract_id": self.contract.contract_id,
            "tick_types": [t.value for t in self.handles],
            "start": iso_ns(self.start_ns),
            "sent": self.sent,
            "position": None if self.position_ns is None else iso_ns(self.position_ns),
        }
