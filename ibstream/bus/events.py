"""The source's events on the bus (`ibstream.events.<server_id>`), as the protocol fixes them.

Every event is `{"server_id", "status", "message", "details", ...}` (orjson), in the same
JetStream stream as the ticks, so a consumer reads it in order with them: `source_started`
before any tick of that server_id, `stream_opened` (with the contract) before a stream's first
tick, `stream_closed`, `stream_error`, the IB connection's statuses with the sequences of the
open streams, and `bus_overflow` naming what a full buffer dropped. Each has its own message id
(`<server_id>.event.<n>`), so a re-sent event is stored once as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from ibstream.bus import wire
from ibstream.model import ContractInfo, TickType

if TYPE_CHECKING:
    from ibstream.ib.source import SourceEvent


# One message for the bus, a plain tuple: (subject, body, message id, contract id, tick type,
# first sequence, ticks); an event has contract id 0 and no ticks. Only strings, bytes and
# ints in an exact tuple, so the garbage collector stops tracking a buffered one (it does
# not untrack a NamedTuple): a full buffer costs no collection time.
Message = tuple[str, bytes, str, int, str, int, int]


def is_tick(message: Message) -> bool:
    return message[3] != 0


class EventMaker:
    """Event messages of one source run, numbered for their message ids."""

    def __init__(self, server_id: str):
        self.server_id = server_id
        self.subject = wire.event_subject(server_id)
        self.count = 0

    def make(self, status: str, message: str, details: dict | None = None, **extra) -> Message:
        self.count += 1
        body = {
            "server_id": self.server_id,
            "status": status,
            "message": message,
            "details": details or {},
            **{k: v for k, v in extra.items() if v is not None},
        }
        msg_id = f"{self.server_id}.event.{self.count}"
        return (self.subject, orjson.dumps(body), msg_id, 0, "", 0, 0)

    def stream_opened(self, contract: ContractInfo, tick_type: TickType, last: int) -> Message:
        return self.make(
            "stream_opened",
            f"{contract.symbol} {tick_type.value} subscribed upstream after sequence {last}",
            contract=contract.to_dict(),
            contract_id=contract.contract_id,
            tick_type=tick_type.value,
            last_sequence=last,
        )

    def stream_closed(self, key: tuple[int, TickType], last: int) -> Message:
        return self.make(
            "stream_closed",
            f"upstream subscription of {key[0]} {key[1].value} cancelled at sequence {last}",
            contract_id=key[0],
            tick_type=key[1].value,
            last_sequence=last,
        )

    def stream_event(self, event: SourceEvent, last: int) -> Message:
        """A stream's own event from IB: its error (`stream_error`) or an advisory."""
        assert event.key is not None
        contract_id, tick_type = event.key
        return self.make(
            "stream_error" if event.error is not None else event.status,
            event.message,
            event.details,
            contract_id=contract_id,
            tick_type=TickType.parse(tick_type).value,
            error=event.error.body() if event.error is not None else None,
            last_sequence=last,
        )

    def connection(
        self, status: str, message: str, details: dict | None, held: list[tuple]
    ) -> Message:
        """The IB connection changed: `details.sequences` are the open streams' positions."""
        sequences = [[cid, TickType.parse(tt).value, last] for cid, tt, last in held]
        return self.make(status, message, {**(details or {}), "sequences": sequences})

    def overflow(self, lost: dict[tuple[int, str], list[list[int]]], dropped: int) -> Message:
        """A full buffer dropped these ticks (per stream, ranges first to last) before NATS
        took them."""
        ranges = [[cid, tt, a, b] for (cid, tt), spans in lost.items() for a, b in spans]
        return self.make(
            "bus_overflow",
            f"the source's bus buffer overflowed while NATS was away: {dropped} tick(s) "
            "dropped in all; the ranges listed never reached the bus",
            {"ranges": ranges, "dropped_total": dropped},
        )
