"""The source's events as an edge reads them: each checked (a malformed one raises
ValueError naming what is wrong, and is skipped by the caller), then put in the hub's terms.

`stream_opened` carries a stream's contract and where its numbering stood, `stream_error`
the error that ended it upstream; the connection statuses clients know (`ib_disconnected`,
`resumed`, ...: the protocol's `info` statuses) are forwarded to them as the source's hub
broadcasts them. Other statuses (the source's own bookkeeping) stay on the edge.
"""

from __future__ import annotations

import typing

from ibstream.bus.asks import contract_from
from ibstream.errors import StreamError, error_from_body
from ibstream.ib.source import SourceEvent
from ibstream.model import ContractInfo, TickType
from ibstream.protocol.messages import InfoStatus
from ibstream.server.hub import StreamKey

FORWARDED = frozenset(typing.get_args(InfoStatus))  # source statuses clients may be told


def stream_key(event: dict) -> StreamKey | None:
    """The stream an event is about; None for the whole source."""
    contract_id, tick_type = event.get("contract_id"), event.get("tick_type")
    if contract_id is None and tick_type is None:
        return None
    if not isinstance(contract_id, int) or not isinstance(tick_type, str):
        raise ValueError(f"contract_id {contract_id!r}, tick_type {tick_type!r}")
    try:
        return StreamKey(contract_id, TickType.parse(tick_type))
    except StreamError as exc:
        raise ValueError(exc.message) from None


def opened(event: dict) -> tuple[StreamKey, ContractInfo, int]:
    """`stream_opened`: the stream, its contract and its last sequence when it opened."""
    key, last = stream_key(event), event.get("last_sequence", 0)
    if key is None or not isinstance(last, int) or last < 0:
        raise ValueError("stream_opened needs contract_id, tick_type and last_sequence")
    return key, contract_from(event.get("contract")), last


def failure(event: dict) -> tuple[StreamKey, StreamError]:
    """`stream_error`: the stream and the error that ended it upstream."""
    key, body = stream_key(event), event.get("error")
    if key is None or not isinstance(body, dict):
        raise ValueError("stream_error needs contract_id, tick_type and error")
    return key, error_from_body(body)


def told(event: dict) -> SourceEvent | None:
    """What clients hear of a status event (an `info`), or None when it is not theirs."""
    status = event["status"]
    if status not in FORWARDED:
        return None
    message = str(event.get("message") or status)
    details = event.get("details") if isinstance(event.get("details"), dict) else None
    return SourceEvent(status, message, stream_key(event), details=details)
