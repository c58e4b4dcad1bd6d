"""One subscription (a contract and its tick types) as it outlives connections.

It knows where each of its streams stands (the last sequence received per tick type, from
the `start_sequence` of `subscribed` before the first tick), so a reconnect resumes exactly
there; it drops any tick it has already had (sequence <= last seen). Sequences belong to one
server instance (`server_id`): when a reconnect reaches another one, the positions are void,
a `Gap` (`server_restarted`) is reported per stream and the subscription starts afresh. A
server without ids says `unknown_sequence` instead. Server `info`s, `gap`s and stream errors
become client events. Positions are per subscription, because two subscriptions of one
stream receive the same sequences. A batched `ticks` frame holds several streams' ticks in
arrival order; the transport hands each subscription its items (`on_ticks`), checked tick by
tick and passed on in one call. A sink that overflows, or a message that cannot be
delivered, ends this subscription alone (an `ErrorEvent` and the subscription's `error`);
the transport then unsubscribes it and the connection carries on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from itertools import compress, repeat
from operator import eq, itemgetter
from typing import Any

from ibstream.client.events import ErrorEvent, EventLog, Gap, Info
from ibstream.client.sinks import Sink, put_many
from ibstream.errors import ErrorCode, StreamError, error_from_body
from ibstream.model import TickType
from ibstream.protocol.validate import contract_spec

DEFAULT_TICK_TYPES = ("bid_ask", "last")
_TICK_TYPE = itemgetter("tick_type")
_SEQUENCE = itemgetter("sequence")
log = logging.getLogger("ibstream.client")


def parse_tick_types(tick_types: str | Iterable[str]) -> list[str]:
    """Wire names of the tick types (ours or IB's: `BidAsk`); InvalidTickType otherwise."""
    if isinstance(tick_types, str):
        tick_types = [tick_types]
    return [t.value for t in TickType.parse_list(list(tick_types))]


def check_batch_ms(batch_ms: float | None) -> float | None:
    """None (one message per tick) or a number of milliseconds, 0 < batch_ms <= 1000."""
    if batch_ms is None:
        return None
    if isinstance(batch_ms, bool) or not isinstance(batch_ms, int | float):
        raise ValueError(f"batch_ms must be a number of milliseconds; got {batch_ms!r}")
    if not 0 < batch_ms <= 1000:
        raise ValueError(f"batch_ms must be > 0 and <= 1000 (milliseconds); got {batch_ms!r}")
    return batch_ms


def check_format(frame_format: object, batch_ms: float | None) -> str:
    """'json' or 'arrow' (binary Arrow frames: batched, so `batch_ms` is needed)."""
    if frame_format not in ("json", "arrow"):
        raise ValueError(f"format must be 'json' or 'arrow'; got {frame_format!r}")
    if frame_format == "arrow" and batch_ms is None:
        raise ValueError(
            "format='arrow' sends batched frames: pass batch_ms too (e.g. batch_ms=50)"
        )
    return frame_format  # type: ignore[return-value]


def parse_contract(contract: object) -> str | int:
    """A conId (`265598`) or a spec (`"ES"`, `"AAPL"`, `"EUR.USD"`); InvalidMessage otherwise."""
    try:
        return contract_spec(contract, "contract")
    except StreamError as exc:  # the protocol's MessageError, as the typed InvalidMessage
        raise StreamError(exc.code, exc.message, details=exc.details) from None


class Subscription:
    """Positions, dedup and delivery for one subscribe, across any number of reconnects."""

    def __init__(
        self,
        contract: object,
        tick_types: Iterable[str],
        sink: Sink,
        events: EventLog,
        batch_ms: float | None = None,
        frame_format: str = "json",
    ):
        self.spec = parse_contract(contract)
        self.tick_types = parse_tick_types(tick_types)
        self.batch_ms = check_batch_ms(batch_ms)  # ask the server for batched frames
        self.format = check_format(frame_format, self.batch_ms)  # "arrow": binary frames
        self.sink = sink
        self.events = events
        self.contract: dict = {}
        self.positions: dict[str, int] = {}  # tick type -> last sequence received
        self.stream_ids: dict[str, str] = {}  # server stream id -> tick type (current binding)
        self.server_id: str | None = None  # the server instance the positions belong to
        self.received = 0
        self.keeper: object = None  # what this subscription keeps alive while it runs
        self.duplicates = 0
        self.active = True
        self.error: StreamError | None = None
        self._gap_told: set[str] = set()  # tick types whose next jump the server already told
        self._starts: dict[str, int] = {}  # tick type -> start_sequence of the last binding
        self._stream_errors: dict[str, StreamError] = {}

    @property
    def contract_id(self) -> int | None:
        return self.contract.get("contract_id")

    @property
    def target(self) -> str | int:
        """What to subscribe to: the conId once known (exact across reconnects), else the spec."""
        return self.contract_id or self.spec

    def resume_from(self) -> dict[str, int]:
        return dict(self.positions)

    def bind(self, data: dict) -> list[str]:
        """Take a `subscribed` reply: the contract and this connection's stream ids."""
        self.check_server(data.get("server_id"))
        self.contract = data.get("contract") or self.contract
        self.stream_ids = {s["stream_id"]: s["tick_type"] for s in data.get("streams", ())}
        self._starts.clear()
        for stream in data.get("streams", ()):  # a server that says where a stream starts
            start = stream.get("start_sequence")
            if isinstance(start, int):
                self._starts[stream["tick_type"]] = start
                self.positions.setdefault(stream["tick_type"], start)
        return list(self.stream_ids)

    def check_server(self, server_id: object) -> bool:
        """Note the server instance; True (positions reset, a Gap per stream) if it changed."""
        if not isinstance(server_id, str) or not server_id:
            return False
        old, self.server_id = self.server_id, server_id
        if old is None or old == server_id:
            return False
        for tick_type in self.tick_types:
            last = self.positions.get(tick_type)
            self.events.emit(
                Gap(
                    self.contract_id,
                    tick_type,
                    "server_restarted",
                    f"the server restarted (instance {old} -> {server_id}): ticks since "
                    f"{'sequence ' + str(last) if last is not None else 'the last one'} until "
                    "the new subscription were not received; its sequences start over",
                    {"old_server_id": old, "new_server_id": server_id, "last_sequence": last},
                )
            )
        self.positions.clear()
        self._gap_told.clear()
        return True

    def on_message(self, msg: dict) -> None:
        """Handle one stream message (tick, ticks, info, error, complete) of a bound stream."""
        self._guarded(self._handle, msg)

    def on_items(self, items: list[dict]) -> None:
        """Handle this subscription's items of a `ticks` frame of several subscriptions."""
        self._guarded(self.on_ticks, items)

    def _guarded(self, handle: Callable[[Any], None], arg: object) -> None:
        try:
            handle(arg)
        except Exception as exc:  # a broken row or sink: this subscription ends, not the link
            log.exception("%s: delivering a message failed", self.describe())
            error = StreamError(
                ErrorCode.INTERNAL_ERROR,
                f"a message of {self.describe()} could not be delivered "
                f"({type(exc).__name__}: {exc}); the subscription was stopped",
            )
            self._fail_loudly(error)

    def _handle(self, msg: dict) -> None:
        kind = msg.get("type")
        data = msg.get("data") or {}
        if kind == "tick":
            self.on_tick(data)
            return
        if kind == "ticks":
            self.on_ticks(data["ticks"])
            return
        tick_type = self.stream_ids.get(msg.get("stream_id", ""))
        if kind == "info":
            self._on_info(tick_type, data)
        elif kind == "error":
            error = error_from_body(data)
            self._stream_errors[msg.get("stream_id", "")] = error
            self.events.emit(ErrorEvent(error, self.contract_id, tick_type))
        elif kind == "complete":
            self._on_complete(msg.get("stream_id", ""), data)

    def on_tick(self, data: dict) -> None:
        if not self.active:
            return
        tick_type, seq = data["tick_type"], data["sequence"]
        last = self.positions.get(tick_type)
        if last is not None:
            if seq <= last:
                self.duplicates += 1
                return
            self._check_gap(tick_type, last, seq)
        self._gap_told.discard(tick_type)
        self.positions[tick_type] = seq
        self.received += 1
        overflow = self.sink.put(data)
        if overflow is not None:  # its consumer fell behind: stop it on the server too
            self._fail_loudly(overflow)

    def on_ticks(self, items: list[dict]) -> None:
        """Items of a `ticks` frame for this subscription, in arrival order (its tick types
        interleaved): per tick type, ticks already had are dropped and holes reported
        exactly as for single ticks; the rest go to the sink in one call, in that order."""
        if not self.active or not items:
            return
        if self._all_new(items):
            fresh = items
        else:
            fresh = self._new_items(items)
        if fresh:
            self.received += len(fresh)
            overflow = put_many(self.sink, fresh)
            if overflow is not None:
                self._fail_loudly(overflow)

    def on_frame(self, table: object) -> None:
        """This subscription's rows of an Arrow frame, checked as `on_ticks` checks items
        (`arrow_frames.deliver`)."""
        from ibstream.client.arrow_frames import deliver  # pyarrow only for Arrow frames

        self._guarded(partial(deliver, self), table)

    def _all_new(self, items: list[dict]) -> bool:
        return self._follows_on(list(map(_TICK_TYPE, items)), list(map(_SEQUENCE, items)))

    def _follows_on(self, types: list[str], sequences: list[int]) -> bool:
        """Whether every tick follows on from its tick type's position without a hole (the
        usual frame); then positions move to each type's last tick. Scans in C (list
        methods), not per tick in Python."""
        kinds = set(types)
        spans = {}
        for tick_type in kinds:
            mine = (
                sequences
                if len(kinds) == 1
                else list(compress(sequences, map(eq, types, repeat(tick_type))))
            )
            first, last = mine[0], mine[-1]
            if mine != list(range(first, last + 1)):
                return False
            spans[tick_type] = (first, last)
        return self._advance(spans)

    def _advance(self, spans: dict[str, tuple[int, int]]) -> bool:
        """Given each tick type's (first, last) of a run without holes: when every run
        follows on from its position, move the positions to the lasts (else move nothing)."""
        for tick_type, (first, _) in spans.items():
            known = self.positions.get(tick_type)
            if known is not None and first != known + 1:
                return False
        self.positions.update({tick_type: last for tick_type, (_, last) in spans.items()})
        if self._gap_told:
            self._gap_told.difference_update(spans)
        return True

    def _new_items(self, items: list[dict]) -> list[dict]:
        """The items not had yet, tick by tick: duplicates dropped, holes reported."""
        fresh = self._fresh(list(map(_TICK_TYPE, items)), list(map(_SEQUENCE, items)))
        return list(compress(items, fresh))

    def _fresh(self, types: list[str], sequences: list[int]) -> list[bool]:
        """Per tick, whether it is new (positions move, holes are reported) or had already."""
        positions, told = self.positions, self._gap_told
        fresh = []
        for tick_type, seq in zip(types, sequences, strict=True):
            last = positions.get(tick_type)
            if last is not None:
                if seq <= last:
                    self.duplicates += 1
                    fresh.append(False)
                    continue
                if seq > last + 1:
                    self._check_gap(tick_type, last, seq)
            if told:
                told.discard(tick_type)
            positions[tick_type] = seq
            fresh.append(True)
        return fresh

    def _check_gap(self, tick_type: str, last: int, seq: int) -> None:
        """Report the sequences between `last` and `seq` unless the server already did."""
        if seq > last + 1 and tick_type not in self._gap_told:
            self.events.emit(
                Gap(
                    self.contract_id,
                    tick_type,
                    "missed",
                    f"sequences {last + 1}-{seq - 1} never arrived",
                    {"first_missing": last + 1, "last_missing": seq - 1},
                )
            )

    def _on_info(self, tick_type: str | None, data: dict) -> None:
        status = data.get("status", "")
        details = dict(data.get("details") or {})
        message = data.get("message", "")
        if status != "gap":
            self.events.emit(Info(self.contract_id, tick_type, status, message, details))
            return
        reason = details.get("reason", "")
        if tick_type is not None:
            self._gap_told.add(tick_type)
            if reason == "unknown_sequence":  # the server restarted: its numbering starts over
                self.positions.pop(tick_type, None)
                if tick_type in self._starts:  # ... from where this stream joined
                    self.positions[tick_type] = self._starts[tick_type]
        self.events.emit(Gap(self.contract_id, tick_type, reason, message, details))

    def _on_complete(self, stream_id: str, data: dict) -> None:
        reason = data.get("reason")
        if reason == "server_shutdown":  # the connection goes next; the client reconnects
            return
        self.stream_ids.pop(stream_id, None)
        if reason == "error":
            error = self._stream_errors.get(stream_id) or StreamError(
                ErrorCode.INTERNAL_ERROR, "the server ended the stream with an error"
            )
            self.fail(error)
        elif not self.stream_ids:
            self.finish()

    def _fail_loudly(self, error: StreamError) -> None:
        if self.active:
            self.fail(error)
            self.events.emit(ErrorEvent(error, self.contract_id))

    def fail(self, error: StreamError) -> None:
        """End with an error: consumers see it (an iterator raises it)."""
        if self.active:
            self.active = False
            self.error = error
            self.sink.end(error)

    def finish(self) -> None:
        """End normally: iterators stop."""
        if self.active:
            self.active = False
            self.sink.end(None)

    def describe(self) -> str:
        return f"{self.contract.get('local_symbol') or self.spec} {'+'.join(self.tick_types)}"
