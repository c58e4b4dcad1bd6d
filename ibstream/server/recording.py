"""Recording for a running server (`--record`): the store's recorder joined to the hub, and
the streams kept open from start-up for it (`--record-contract`) whether or not a client
watches them.

A kept stream is a member of the hub like a client's stream, except that it delivers
nowhere: the hub records every tick it numbers. A contract IB cannot resolve yet (IB not
connected) is retried until it can; one IB does not know is logged once and left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import time as clock_time

from ibstream.errors import ErrorCode, StreamError
from ibstream.model import ContractInfo, TickType
from ibstream.server.hub import Hub, QuietMember
from ibstream.store import before_start, gaps
from ibstream.store.backfill import Backfill
from ibstream.store.layout import open_root
from ibstream.store.recorder import Recorder

log = logging.getLogger(__name__)
DEFAULT_TICK_TYPES = (TickType.BID_ASK, TickType.LAST)
RETRY_SECONDS = (0.5, 30.0)  # first and longest wait before asking IB again


def parse_record_spec(spec: str) -> tuple[str, list[TickType]]:
    """`ES`, `265598:last`, `ES:FUT:CME:bid_ask,last` -> (contract spec, tick types): a last
    `:` part that names tick types is the tick types, anything else is the contract's."""
    text = spec.strip()
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            return head, TickType.parse_list(tail)
        except StreamError:
            if "," in tail or tail.lower() in {"last", "bid_ask", "all_last", "mid_point"}:
                raise
    if not text:
        raise StreamError(ErrorCode.CONTRACT_NOT_FOUND, "an empty --record-contract spec")
    return text, list(DEFAULT_TICK_TYPES)


@dataclass(eq=False)
class KeptStream(QuietMember):
    """A hub member that only keeps its channel open (the recorder takes the ticks)."""

    recording: Recording | None = None

    def fail(self, error: StreamError) -> None:
        """IB ended the stream (no permission, a slot limit ...): ask again later."""
        log.warning(
            "recorded stream %s %s ended: %s; asking again in %g s",
            self.contract.symbol,
            self.tick_type.value,
            error.message,
            RETRY_SECONDS[1],
        )
        if self.recording is not None:
            self.recording.retry_later(self)


@dataclass(eq=False)
class Recording:
    hub: Hub
    recorder: Recorder
    specs: tuple[str, ...] = ()
    kept: list[KeptStream] = field(default_factory=list)
    backfill: Backfill | None = None
    backfill_from: clock_time | None = None  # --backfill-from: kept streams' day before start
    problems: list[str] = field(default_factory=list)  # --backfill-from refused, per stream
    _tasks: set[asyncio.Task] = field(default_factory=set)

    @classmethod
    async def start(
        cls,
        hub: Hub,
        location: str,
        flush_seconds: float,
        specs: tuple[str, ...],
        *,
        backfill: bool = True,
        backfill_from: clock_time | None = None,
    ) -> Recording:
        """Open the store (StreamError when it cannot be used), then keep `specs` open;
        `backfill`: fill the store's open gaps from IB's history meanwhile; `backfill_from`:
        and each kept stream's day from that time to its first start (`before_start`)."""
        parsed = [parse_record_spec(spec) for spec in specs]  # bad specs fail before anything
        recorder = Recorder(open_root(location), flush_seconds=flush_seconds)
        await recorder.start(hub.server_id)
        recorder.on_status = hub.broadcast
        hub.recorder = recorder
        recording = cls(hub, recorder, specs, backfill_from=backfill_from if backfill else None)
        if backfill:
            recording.backfill = Backfill(recorder, hub.source)
            recorder.on_gaps = recording.backfill.wake
            recording.backfill.start()
        for contract_spec, kinds in parsed:
            recording._spawn(recording._keep(contract_spec, kinds))
        return recording

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep(self, spec: str, kinds: list[TickType]) -> None:
        wait = RETRY_SECONDS[0]
        while True:
            try:
                contract = await self.hub.resolve(spec)
                break
            except StreamError as exc:
                if exc.code != ErrorCode.CONNECTION_ERROR:
                    log.error("--record-contract %s: %s; not recorded", spec, exc.message)
                    return
            await asyncio.sleep(wait)  # IB not connected yet: a backoff, not a sync
            wait = min(wait * 2, RETRY_SECONDS[1])
        started_ns = time.time_ns()
        for kind in kinds:
            stream = KeptStream(contract, kind, self)
            self.kept.append(stream)
            self.hub.attach(stream)  # type: ignore[arg-type]
        log.info("recording %s (%s) from start-up", spec, ",".join(k.value for k in kinds))
        if self.backfill_from is not None:
            await self._before_start(spec, contract, kinds, started_ns)

    async def _before_start(
        self, spec: str, contract: ContractInfo, kinds: list[TickType], started_ns: int
    ) -> None:
        """--backfill-from: the kept streams' time before their first start today, as gaps."""
        assert self.backfill_from is not None and self.backfill is not None
        zone_name = getattr(self.hub.source, "time_zone", lambda _: None)(contract.contract_id)
        zone = before_start.zone_of(zone_name)
        if zone_name and str(zone) != zone_name:
            log.warning(
                "--backfill-from: %s's time zone %r is unknown here; using UTC", spec, zone_name
            )
        rows = []
        for kind in kinds:
            try:
                row = await asyncio.to_thread(
                    before_start.gap_for,
                    self.recorder.root,
                    contract.contract_id,
                    kind.value,
                    self.backfill_from,
                    zone,
                    started_ns,
                    self.recorder.server_id,
                )
            except before_start.BackfillFromError as exc:
                log.error("%s: %s", spec, exc)
                self.problems.append(f"{spec} {kind.value}: {exc}")
                continue
            if row is None:
                log.info(
                    "--backfill-from: %s %s has its %s gap of today already; not asked again",
                    spec,
                    kind.value,
                    before_start.REASON,
                )
            else:
                rows.append(row)
        if rows:
            await asyncio.to_thread(gaps.write, self.recorder.root, self.recorder.server_id, rows)
            self.backfill.wake()

    def retry_later(self, stream: KeptStream) -> None:
        async def again() -> None:
            await asyncio.sleep(RETRY_SECONDS[1])
            if stream.active and not self.hub.closed:
                self.hub.attach(stream)  # type: ignore[arg-type]

        self._spawn(again())

    def status(self) -> dict:
        return {
            **self.recorder.status(),
            "record_contracts": list(self.specs),  # as configured; resolved ones below
            "kept_streams": [
                {"contract_id": s.contract.contract_id, "tick_type": s.tick_type.value}
                for s in self.kept
            ],
            "backfill": self.backfill.status() if self.backfill is not None else None,
            "backfill_from": None
            if self.backfill_from is None
            else {"from": f"{self.backfill_from:%H:%M}", "problems": list(self.problems)},
        }

    async def stop(self) -> None:
        """After the hub closed: no more ticks come, write what is buffered."""
        for stream in self.kept:
            stream.active = False
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.backfill is not None:
            await self.backfill.stop()
        await self.recorder.stop()
