"""Validation of everything a client sends: WebSocket messages and SSE query parameters.

The pydantic models of `requests.py` do the checking; this module turns their first error
into an INVALID_MESSAGE (or INVALID_TICK_TYPE) that names the field, what was expected and
what arrived, so a client author can fix the request from the error alone, and hands the
transports plain objects (`ClientMessage`, `Subscribe`).
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json

from ibstream.errors import StreamError
from ibstream.model import TickType
from ibstream.protocol import requests as rq
from ibstream.protocol.rejections import MISSING, MessageError, from_validation, invalid, quoted

STREAM_TYPES = ("subscribe", "unsubscribe", "unsubscribe_all", "ping", "history", "history_cancel")
CONTROL_TYPES = ("stats", "ping")
_ADAPTERS = {STREAM_TYPES: rq.STREAM_ADAPTER, CONTROL_TYPES: rq.CONTROL_ADAPTER}
_MODELS = {
    typing.get_args(m.model_fields["type"].annotation)[0]: m
    for m in (*rq.STREAM_REQUESTS, rq.StatsRequest)
}
_TICK_LIST: TypeAdapter = TypeAdapter(list[rq.TickTypeName])
_RESUME: TypeAdapter = TypeAdapter(rq.ResumeFrom)


@dataclass(slots=True)
class Subscribe:
    contract: str | int
    tick_types: list[TickType]
    limit: int | None = None
    timeout: float | None = None
    resume_from: dict[TickType, int] | None = None
    batch_ms: float | None = None  # None: one `tick` message per tick
    start: int | None = None  # replay servers: replay from this time (epoch ns)
    format: str = "json"  # "arrow": batched ticks as binary Arrow IPC frames (protocol/arrow)


@dataclass(slots=True)
class History:
    """A history request: [start, end) (epoch ns; end None: now) of `tick_types`."""

    contract: str | int
    tick_types: list[TickType]
    start: int
    end: int | None = None


DEFAULT_HISTORY_TYPES = (TickType.BID_ASK, TickType.LAST)


@dataclass(slots=True)
class ClientMessage:
    type: str
    request_id: str | int | None
    data: dict
    subscribe: Subscribe | None = None
    stream_id: str | None = None
    timestamp: str | None = None  # the client's top-level `timestamp`, as sent
    history: History | None = None


def _request_id(raw: str | bytes) -> str | int | None:
    """The message's id, if it has a usable one. pydantic's parser, not orjson: a message
    rejected for a number such as 1e400 (infinite) must still get its id back."""
    try:
        obj = from_json(raw)
    except ValueError:
        return None
    rid = obj.get("id") if isinstance(obj, dict) else None
    try:
        return rq.request_id_value(rid)
    except ValueError:
        return None


def _message_error(
    exc: ValidationError, raw: str | bytes, allowed: tuple[str, ...]
) -> MessageError:
    err = exc.errors(include_url=False)[0]
    kind = err["type"]
    if kind == "json_invalid":
        return MessageError(
            f"malformed JSON: {err['ctx']['error']}",
            expected="a JSON object",
            got=raw if isinstance(raw, str) else raw.decode("utf-8", "replace"),
        )
    if kind in ("dict_type", "model_type") and not err["loc"]:
        got = type(err["input"]).__name__
        return MessageError(
            "a message must be a JSON object with 'type'", expected="object", got=got
        )
    rid = _request_id(raw)
    if kind == "union_tag_not_found":
        return invalid("type", "one of " + ", ".join(allowed), MISSING, rid)
    if kind == "union_tag_invalid":
        tag = err["input"].get("type")
        return MessageError(
            f"unknown message type {quoted(tag)}; expected one of {', '.join(allowed)}",
            field="type",
            expected=" | ".join(allowed),
            got=tag,
            request_id=rid,
        )
    root = _MODELS.get(str(err["loc"][0])) if err["loc"] else None
    return from_validation(exc, rid, root=root, tags=allowed)


def parse_message(raw: str | bytes, allowed_types: tuple[str, ...] = STREAM_TYPES) -> ClientMessage:
    """Decode and validate one WebSocket message, raising MessageError on any defect."""
    adapter = _ADAPTERS.get(allowed_types)
    if adapter is None:
        raise ValueError(f"no message set {allowed_types!r}; use STREAM_TYPES or CONTROL_TYPES")
    try:
        req = adapter.validate_json(raw)
    except ValidationError as exc:
        raise _message_error(exc, raw, allowed_types) from None
    msg = ClientMessage(req.type, req.id, {}, timestamp=req.timestamp)
    if req.type == "ping" and req.data is not None:
        msg.data = req.data.model_dump(exclude_unset=True)
    elif req.type == "subscribe":
        msg.subscribe = _subscribe(req.data, req.id)
    elif req.type == "unsubscribe":
        msg.stream_id = req.data.stream_id
    elif req.type == "history":
        d = req.data
        kinds = list(dict.fromkeys(d.tick_types)) if d.tick_types else list(DEFAULT_HISTORY_TYPES)
        msg.history = History(d.contract, kinds, d.start, d.end)
    return msg


def _subscribe(data: rq.SubscribeData, rid: str | int | None) -> Subscribe:
    types_ = list(dict.fromkeys(data.tick_types))
    out = Subscribe(data.contract_id, types_)
    config = data.config
    if config is not None:
        out.limit, out.timeout = config.limit, config.timeout_seconds
        out.batch_ms = config.batch_ms or None
        out.start = config.start
        out.format = config.format or "json"
        if out.format == "arrow" and out.batch_ms is None:
            raise MessageError(
                "'data.config.format' 'arrow' sends batched frames: it needs 'batch_ms' "
                "(e.g. 50); leave format out for one JSON message per tick",
                field="data.config.format",
                expected="batch_ms > 0 beside format 'arrow'",
                got="arrow",
                request_id=rid,
            )
        if config.resume_from is not None:
            out.resume_from = resume_positions(
                config.resume_from, types_, "data.config.resume_from", rid
            )
    return out


def resume_positions(
    value: int | dict[str, int], types: list[TickType], path: str, rid: str | int | None = None
) -> dict[TickType, int]:
    """`resume_from` (already validated): one sequence (only with one tick type) or
    {tick_type: sequence}. Sequences are counted per tick type, so one number cannot say
    where several streams stopped; a map can."""
    if not isinstance(value, dict):
        if len(types) != 1:
            raise MessageError(
                f"'{path}' as one number needs exactly one tick type; with several give one "
                'sequence per type, e.g. {"bid_ask": 50, "last": 3}',
                field=path,
                request_id=rid,
            )
        return {types[0]: value}
    out: dict[TickType, int] = {}
    for name, seq in value.items():
        try:
            tick_type = TickType.parse(name)
        except StreamError:
            tick_type = None
        if tick_type not in types:
            raise invalid(
                f"{path}.{name}",
                f"one of the subscribed tick types {[t.value for t in types]}",
                name,
                rid,
            )
        out[tick_type] = seq  # type: ignore[index]
    return out


def contract_spec(value: object, path: str, rid: str | int | None = None) -> str | int:
    """A conId (int or digits) or a symbol spec such as 'AAPL', 'EURUSD', 'ES'."""
    try:
        return rq.contract_value(value)
    except ValueError:
        raise invalid(path, rq.EXPECTED["contract_id"], value, rid) from None


def tick_types(value: object, path: str = "tick_types") -> list[TickType]:
    """A list of tick type names (IB's spellings too), duplicates merged."""
    try:
        return list(dict.fromkeys(_TICK_LIST.validate_python(value)))
    except ValidationError as exc:
        raise from_validation(exc, prefix=path) from None


def parse_resume_text(text: str, types: list[TickType], name: str) -> dict[TickType, int]:
    """SSE form of resume_from / Last-Event-ID: `50`, or `bid_ask:50,last:3`."""
    text = text.strip()
    value: object = text
    if ":" in text:
        pairs = (part.partition(":") for part in text.split(","))
        value = {key.strip(): seq.strip() for key, _, seq in pairs}
    try:
        parsed = _RESUME.validate_python(value, strict=False)
    except ValidationError as exc:
        raise from_validation(exc, prefix=name) from None
    return resume_positions(parsed, types, name)


def query_items(params: Iterable[tuple[str, str]], allowed: list[str]) -> dict[str, str]:
    """An HTTP query as a dict: an unknown or repeated parameter is an error naming it."""
    seen: dict[str, str] = {}
    for key, value in params:
        if key not in allowed:
            raise MessageError(
                f"unknown query parameter '{key}'; allowed: {', '.join(allowed)}",
                field=key,
                details={"allowed": allowed},
            )
        if key in seen:
            raise MessageError(f"query parameter '{key}' given more than once", field=key)
        seen[key] = value
    return seen


def parse_sse_params(
    contract: str,
    tick_type: str | None,
    params: Iterable[tuple[str, str]],
    last_event_id: str | None = None,
) -> Subscribe:
    """Validate an SSE request: path parts, then the query (`SseQuery`).

    `tick_type` is the path segment of /v2/stream/{contract_id}/{tick_type}; None means the
    multi-type endpoint, where `tick_types` is required. `Last-Event-ID` counts as resume_from.
    `token` is accepted (EventSource cannot send headers): never log it.
    """
    allowed = [f for f in rq.SseQuery.model_fields if tick_type is None or f != "tick_types"]
    seen = query_items(params, allowed)
    try:
        query = rq.SseQuery.model_validate(seen)
    except ValidationError as exc:
        raise from_validation(exc, root=rq.SseQuery) from None
    if query.format == "arrow":
        raise MessageError(
            "format 'arrow' is binary and SSE is text: ask for Arrow frames on the WebSocket "
            "endpoint /v2/ws/stream, or leave format out",
            field="format",
            expected=rq.EXPECTED["format"],
            got="arrow",
        )
    spec = contract_spec(contract, "contract_id")
    if tick_type is not None:
        types_ = tick_types([tick_type], "tick_type")
    elif query.tick_types is None:
        raise invalid("tick_types", rq.EXPECTED["tick_types"], MISSING, None)
    else:
        types_ = tick_types(query.tick_types.split(","))
    out = Subscribe(
        spec, types_, query.limit, query.timeout, batch_ms=query.batch_ms or None, start=query.start
    )
    resume, name = query.resume_from, "resume_from"
    if resume is None and last_event_id:
        resume, name = last_event_id, "Last-Event-ID"
    if resume is not None:
        out.resume_from = parse_resume_text(resume, types_, name)
    return out


def parse_history_params(
    contract: str, params: Iterable[tuple[str, str]]
) -> tuple[History, str, str]:
    """`GET /v2/history/{contract}`'s path and query (`HistoryQuery`) -> the request, the
    format asked for ("": not given) and the Arrow answer's compression ("none" unless asked)."""
    allowed = list(rq.HistoryQuery.model_fields)
    seen = query_items(params, allowed)
    if "start" not in seen:
        raise invalid("start", rq.HistoryQuery.EXPECTED["start"], MISSING, None)
    try:
        query = rq.HistoryQuery.model_validate(seen)
    except ValidationError as exc:
        raise from_validation(exc, root=rq.HistoryQuery) from None
    spec = contract_spec(contract, "contract")
    kinds = (
        tick_types(query.tick_types.split(",")) if query.tick_types else list(DEFAULT_HISTORY_TYPES)
    )
    compression = query.compression or "none"
    if compression != "none" and query.format != "arrow":
        raise invalid("compression", "none unless format=arrow", compression, None)
    return History(spec, kinds, query.start, query.end), query.format or "", compression
