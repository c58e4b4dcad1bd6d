"""Source events as a consumer reads them off the bus (`ibstream.events.<server_id>`):
checked field by field, so a malformed one is a ValueError / TypeError the consumer logs
and skips, never a crash."""

from __future__ import annotations

from typing import NamedTuple

import orjson

from ibstream.bus import wire
from ibstream.bus.record_run import contract_of
from ibstream.model import ContractInfo, TickType


class BusEvent(NamedTuple):
    server_id: str
    status: str
    key: tuple[int, TickType] | None  # the stream it is about, if any
    contract: ContractInfo | None
    last_sequence: int | None
    sequences: list[tuple[int, str, int]]  # details.sequences: the open streams' positions


def parse_event(subject: str, body: bytes) -> BusEvent:
    data = orjson.loads(body)
    if not isinstance(data, dict):
        raise TypeError("an event must be a JSON object")
    server_id, status = data.get("server_id"), data.get("status")
    if not isinstance(server_id, str) or not server_id or not isinstance(status, str):
        raise ValueError("an event needs a server_id and a status (text)")
    if subject != wire.event_subject(server_id):
        raise ValueError(f"event of {server_id!r} on the subject {subject!r}")
    contract_id, tick_type = data.get("contract_id"), data.get("tick_type")
    key = None
    if contract_id is not None or tick_type is not None:
        key = (_integer("contract_id", contract_id), TickType.parse(str(tick_type)))
    raw = data.get("contract")
    contract = contract_of(raw) if raw is not None else None
    last = data.get("last_sequence")
    details = data.get("details") or {}
    if not isinstance(details, dict):
        raise TypeError("an event's details must be an object")
    sequences = []
    for item in details.get("sequences") or ():
        if not isinstance(item, list | tuple) or len(item) != 3:
            raise ValueError(
                f"details.sequences holds [contract_id, tick_type, sequence], not {item!r}"
            )
        con_id, kind, seq = item
        sequences.append((_integer("contract_id", con_id), TickType.parse(str(kind)).value,
                          _integer("sequence", seq)))  # fmt: skip
    return BusEvent(
        server_id,
        status,
        key,
        contract,
        None if last is None else _integer("last_sequence", last),
        sequences,
    )


def _integer(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"an event's {name} must be an integer, not {value!r}")
    return value
