"""`ibstream record --from-bus nats://... --to DIR`: the tick store's recorder as its own
process, on any host, consuming the bus durably.

A JetStream durable pull consumer on `ibstream.>` reads ticks and events in the order the
source published them. Every `flush_seconds` what was read is written (`RecordRun`: one
recording run per source `server_id`, parts named by it) and only then acknowledged, with
one ack-all up to the last message written: a recorder kill -9ed loses nothing (the bus
hands it again what it had not acknowledged; what is on disk already is dropped by
sequence), and a restart resumes exactly there. At start the consumer is set back to its
ack floor, so what a killed recorder had read but not acknowledged comes first, in order.

What the bus no longer holds becomes gaps: a stream's sequence jumping (`bus_expired`); a
source restarted (a new `server_id`) leaves a `server_restarted` gap for every stream its
old run held; `ib_disconnected` / `resumed` events are the in-process recorder's outage
gaps (acknowledgement stops before an outage's start until it ends, so a restart in between
still sees its start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

import nats
import nats.errors
import nats.js.errors

from ibstream.bus import wire
from ibstream.bus.record_events import BusEvent, parse_event
from ibstream.bus.record_run import RecordRun, stale_gaps, tick_of
from ibstream.bus.record_source import Connection, Contracts, Stopped, pause
from ibstream.errors import StreamError
from ibstream.model import TickType
from ibstream.store import gaps, state
from ibstream.store.layout import open_root
from ibstream.store.recorder import usable_store

log = logging.getLogger(__name__)
DEFAULT_DURABLE = "ibstream-recorder"
EVERYTHING = "ibstream.>"  # ticks and events: the consumer sees them in publication order
FETCH_BATCH = 256  # messages (packs of up to wire.PACK_TICKS ticks)
FETCH_WAIT = 0.25  # seconds a fetch waits for messages (so flushes and stops come on time)
ACK_WAIT = 3_600.0  # a read message is redelivered only after this long without an ack
DAY_NS = 86_400 * 10**9


def _ns(stamp: datetime) -> int:
    return int(stamp.timestamp() * 1e6) * 1_000


class BusRecorder:
    """Records everything on the bus at `url` into the store at `location`."""

    def __init__(
        self, url: str, location: str, *, durable: str = DEFAULT_DURABLE, flush_seconds: float = 1.0
    ) -> None:
        if not flush_seconds > 0:
            raise ValueError(f"flush_seconds must be > 0, not {flush_seconds}")
        self.root = open_root(location)
        self.durable = durable
        self.flush_seconds = flush_seconds
        self.stopping = asyncio.Event()  # set by `run`'s stop, or by the owner directly
        self.bus = Connection(url, self.stopping)
        self.contracts = Contracts(self.bus, self.root)
        self.runs: dict[str, RecordRun] = {}
        self.left: dict[str, state.RunMarker] = {}  # markers of runs no process records now
        self.ticks_recorded = 0
        self.skipped = 0  # malformed messages
        self._sub: nats.js.JetStreamContext.PullSubscription | None = None
        self._seen = 0  # the last stream sequence handled (anything at or below: handled)
        self._acked = 0
        self._ack: nats.aio.msg.Msg | None = None  # the message an ack-all may reach
        self._held = False  # an outage is open: acks stay before its start
        self._expired_since: int | None = None  # the bus lost messages unread, since (ns)
        self._max_age_ns = DAY_NS
        self._last_ns = 0  # the bus time of the last message handled
        self._opened = False  # open_store ran

    async def open_store(self) -> None:
        """Check the store (StreamError if unusable) and find the runs a killed recorder
        left; `start` does it unless done (the CLI does it first: a bad store is one line)."""
        await asyncio.to_thread(usable_store, self.root)
        crashed = await asyncio.to_thread(state.crashed_runs, self.root)
        self.left = {marker.server_id: marker for marker in crashed}
        self._opened = True

    async def start(self) -> None:
        """Check the store (StreamError if unusable), reach the bus, bind the consumer."""
        if not self._opened:
            await self.open_store()
        await self.bus.connect()
        await self._subscribe()

    async def _subscribe(self) -> None:
        """The durable consumer, set back to its ack floor (see the module)."""
        info = await self.bus.stream_info()
        if info.state.last_seq < self._seen:  # a new stream (the bus lost its store)
            log.warning("the bus's stream %s was made anew; reading it from its start", wire.STREAM)
            self._seen = self._acked = 0
        self._max_age_ns = int(info.config.max_age * 1e9) if info.config.max_age else DAY_NS
        self._sub, floor = await self.bus.durable_consumer(self.durable, EVERYTHING, ACK_WAIT)
        self._seen = max(self._seen, floor)
        self._acked = max(self._acked, floor)
        log.info("recording %s from bus message %d on into %s", self.bus.url, floor + 1,
                 self.root.uri)  # fmt: skip

    async def run(self) -> None:
        """Consume, write and acknowledge until `stopping` is set; then write and ack the
        rest (a wait for the bus or a contract ends at once: what it held is not acked)."""
        stop = self.stopping
        with contextlib.suppress(Stopped):
            await self._consume(stop)
        await self._flush()

    async def _consume(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self.flush_seconds
        while not stop.is_set():
            if self.store_problem() is not None:  # the store fails: read no more, retry the flush
                await pause(stop, self.flush_seconds)
                await self._flush()
                continue
            for msg in await self._fetch():
                await self._handle(msg)
            if loop.time() >= due:
                await self._flush()
                due = loop.time() + self.flush_seconds

    async def _fetch(self) -> list:
        assert self._sub is not None
        try:
            return await self._sub.fetch(FETCH_BATCH, timeout=FETCH_WAIT)
        except (nats.errors.TimeoutError, TimeoutError):
            return []
        except nats.js.errors.NotFoundError:  # the consumer vanished (a new bus): again
            await self._subscribe()
        except nats.errors.Error as exc:  # the bus is away: nats-py reconnects by itself
            log.debug("fetch failed: %s", exc)
            await asyncio.sleep(FETCH_WAIT)  # a retry period, not a synchronisation
        return []

    def store_problem(self) -> str | None:
        """Why the store cannot be written right now (the store recorder's own words), or
        None: then what is read is written and acknowledged."""
        return next((r.recorder.problem for r in self.runs.values() if r.recorder.problem), None)

    @property
    def consuming(self) -> bool:
        """The durable consumer is bound and the bus is up: messages are being read."""
        return self._sub is not None and self.bus.connected

    async def _handle(self, msg: nats.aio.msg.Msg) -> None:
        meta = msg.metadata
        seq, at_ns = meta.sequence.stream, _ns(meta.timestamp)
        if seq <= self._seen:  # handled already (a redelivery)
            return
        if seq > self._seen + 1 and self._expired_since is None:
            self._expired_since = self._last_ns or at_ns - self._max_age_ns
            log.warning(
                "the bus no longer holds its messages %d-%d: they expired before this recorder "
                "read them; the streams they held get %s gaps",
                self._seen + 1, seq - 1, "bus_expired",
            )  # fmt: skip
        self._seen, self._last_ns = seq, at_ns
        try:
            if msg.subject.startswith(wire.TICKS + "."):
                await self._tick(msg)
            elif msg.subject.startswith(wire.EVENTS + "."):
                await self._event(parse_event(msg.subject, msg.data), at_ns)
        except (ValueError, TypeError, KeyError, StreamError) as exc:
            self.skipped += 1
            log.warning("skipped a malformed bus message on %s (#%d): %s", msg.subject, seq, exc)
        if not self._held:
            self._ack = msg

    async def _tick(self, msg: nats.aio.msg.Msg) -> None:
        """A pack of one stream's ticks (read whole before any is added: a malformed one
        adds nothing)."""
        pack = wire.parse_pack(msg.subject, msg.data)
        ticks = [tick_of(bus) for bus in pack.ticks]
        first = pack.ticks[0]
        run = await self._run(first.server_id, _ns(msg.metadata.timestamp))
        contract = await self.contracts.get(first.contract_id)
        for bus, tick in zip(pack.ticks, ticks, strict=True):
            if run.add(contract, tick, bus.entry.sequence, self._expired_since):
                self.ticks_recorded += 1

    async def _event(self, event: BusEvent, at_ns: int) -> None:
        run = await self._run(event.server_id, at_ns)
        if event.contract is not None:
            self.contracts.learn(event.contract)
        key = event.key
        if event.status == "stream_opened" and key is not None:
            run.stream_opened(key, event.last_sequence or 0, at_ns)
        elif event.status == "stream_closed" and key is not None:
            run.stream_closed(key)
        elif event.status in ("ib_disconnected", "resumed"):
            streams = [(c, TickType.parse(t), n) for c, t, n in event.sequences]
            run.recorder.connection_changed(event.status, streams, at_ns)
            self._held = event.status == "ib_disconnected"

    async def _run(self, server_id: str, at_ns: int) -> RecordRun:
        """The recording of source run `server_id`; a new one ends the others (a restart)."""
        run = self.runs.get(server_id)
        if run is not None:
            return run
        self._held = False  # an outage of a run that ended: its gap is the restart's
        for old in list(self.runs.values()):
            await old.recorder.flush()
            while old.recorder.problem is not None or old.recorder.pending():
                await pause(self.stopping, self.flush_seconds)  # the store fails: wait
                await old.recorder.flush()
            if rows := old.ended(server_id, at_ns):
                await asyncio.to_thread(gaps.write, self.root, old.server_id, rows)
            await old.recorder.stop()
            del self.runs[old.server_id]
            log.info("source run %s ended; %s began", old.server_id, server_id)
        left = self.left.pop(server_id, None)
        await self._end_left(server_id, at_ns)
        run = self.runs[server_id] = RecordRun(self.root, server_id, self.flush_seconds)
        await run.start(left, set(self.left))
        return run

    async def _end_left(self, server_id: str, at_ns: int) -> None:
        """Run `server_id` began at `at_ns` (bus time), after the last flush of a run a killed
        recorder left and the bus holds nothing more of: that run ended meanwhile, its open
        streams are gaps until then. (Replayed older messages leave such markers alone.)"""
        for marker in [m for m in self.left.values() if m.flushed_ns < at_ns]:
            if rows := stale_gaps(marker, server_id, at_ns):
                await asyncio.to_thread(gaps.write, self.root, marker.server_id, rows)
            await asyncio.to_thread(state.remove, self.root, marker)
            del self.left[marker.server_id]
            log.warning("source run %s ended while no recorder read the bus", marker.server_id)

    async def _flush(self) -> None:
        """Write what was read; acknowledge it (all of it, up to the last message) once
        every run has it on disk."""
        for run in list(self.runs.values()):
            await run.recorder.flush()
        done = all(
            r.recorder.problem is None and not r.recorder.pending() for r in self.runs.values()
        )
        msg = self._ack
        if not done or msg is None or msg.metadata.sequence.stream <= self._acked:
            return
        try:
            await msg.ack_sync(timeout=5.0)
            self._acked = msg.metadata.sequence.stream
        except (nats.errors.Error, TimeoutError) as exc:  # the bus is away: the next flush
            log.debug("ack failed: %s", exc)

    def status(self) -> dict:
        return {
            "bus": self.bus.url,
            "store": self.root.uri,
            "runs": sorted(self.runs),
            "ticks_recorded": self.ticks_recorded,
            "duplicates_dropped": sum(r.duplicates for r in self.runs.values()),
            "missing": sum(r.missing for r in self.runs.values()),
            "skipped": self.skipped,
            "acked": self._acked,
        }

    async def stop(self) -> None:
        """After `run` returned: end every run (markers kept: a later start resumes them)."""
        for run in self.runs.values():
            await run.recorder.stop(keep_marker=True)
        await self.bus.close()
