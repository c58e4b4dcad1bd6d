"""Validation of everything a client sends: WebSocket messages and SSE query parameters.

Every rejection is an INVALID_MESSAGE (or INVALID_TICK_TYPE) error that names the field,
what was expected and what arrived, so a client author can fix the request from the error
alone. Unknown fields are rejected rather than ignored: a typo must not silently drop an
option such as `limit`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from ibstream.errors import ErrorCode, StreamError
from ibstream.model import TickType

STREAM_TYPES = ("subscribe", "unsubscribe", "unsubscribe_all", "ping")
CONTROL_TYPES = ("stats", "ping")
_TOP_FIELDS = ("type", "id", "data", "timestamp")
_MAX_ID_LEN = 128
_MAX_SPEC_LEN = 64
_MISSING = object()


class MessageError(StreamError):
    """A rejected client message; carries the request id when the message had a usable one."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        expected: str | None = None,
        got: object = None,
        request_id: str | int | None = None,
        code: ErrorCode = ErrorCode.INVALID_MESSAGE,
        details: dict | None = None,
    ):
        info = dict(details or {})
        if field is not None:
            info["field"] = field
        if expected is not None:
            info["expected"] = expected
            info["got"] = _preview(got)
        super().__init__(code, message, details=info)
        self.request_id = request_id


@dataclass(slots=True)
class Subscribe:
    contract: str | int
    tick_types: list[TickType]
    limit: int | None = None
    timeout: float | None = None
    resume_from: dict[TickType, int] | None = None


@dataclass(slots=True)
class ClientMessage:
    type: str
    request_id: str | int | None
    data: dict
    subscribe: Subscribe | None = None
    stream_id: str | None = None


def _preview(value: object) -> object:
    if isinstance(value, str) and len(value) > 80:
        return value[:80] + "..."
    if isinstance(value, dict | list):
        return type(value).__name__
    return value


def _invalid(path: str, expected: str, got: object, rid: str | int | None) -> MessageError:
    shown = "missing" if got is _MISSING else f"got {_preview(got)!r}"
    return MessageError(
        f"field '{path}' must be {expected}; {shown}",
        field=path,
        expected=expected,
        got=None if got is _MISSING else got,
        request_id=rid,
    )


def _check_fields(obj: dict, allowed: Iterable[str], where: str, rid: str | int | None) -> None:
    allowed = tuple(allowed)
    for key in obj:
        if key not in allowed:
            path = f"{where}.{key}" if where else str(key)
            raise MessageError(
                f"unknown field '{path}'; allowed here: {', '.join(allowed)}",
                field=path,
                request_id=rid,
                details={"allowed": list(allowed)},
            )


def _object(value: object, path: str, rid: str | int | None, *, required: bool) -> dict:
    if value is _MISSING:
        if required:
            raise _invalid(path, "an object", value, rid)
        return {}
    if not isinstance(value, dict):
        raise _invalid(path, "an object", value, rid)
    return value


def positive_int(value: object, path: str, rid: str | int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _invalid(path, "a positive integer", value, rid)
    return value


def positive_number(value: object, path: str, rid: str | int | None = None) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise _invalid(path, "a positive number of seconds", value, rid)
    return float(value)


def sequence_number(value: object, path: str, rid: str | int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _invalid(path, "a sequence number (integer >= 0)", value, rid)
    return value


def contract_spec(value: object, path: str, rid: str | int | None = None) -> str | int:
    """A conId (int or digits) or a symbol spec such as 'AAPL', 'EURUSD', 'ES'."""
    expected = "a conId (265598) or a symbol such as 'AAPL'"
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and 0 < len(value.strip()) <= _MAX_SPEC_LEN:
        text = value.strip()
        return int(text) if text.isdigit() else text
    raise _invalid(path, expected, value, rid)


def tick_types(value: object, rid: str | int | None = None) -> list[TickType]:
    try:
        return TickType.parse_list(value)
    except StreamError as exc:
        raise MessageError(
            exc.message, code=exc.code, field="tick_types", request_id=rid, details=exc.details
        ) from None


def parse_message(raw: str | bytes, allowed_types: tuple[str, ...] = STREAM_TYPES) -> ClientMessage:
    """Decode and validate one WebSocket message, raising MessageError on any defect."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MessageError(
            f"malformed JSON: {exc}",
            expected="a JSON object",
            got=raw[:80] if isinstance(raw, str) else None,
        ) from None
    if not isinstance(obj, dict):
        raise MessageError(
            "a message must be a JSON object with 'type'", expected="object", got=type(obj).__name__
        )
    rid = obj.get("id")
    if rid is not None and (
        isinstance(rid, bool)
        or not isinstance(rid, str | int)
        or (isinstance(rid, str) and len(rid) > _MAX_ID_LEN)
    ):
        raise _invalid("id", f"a string (up to {_MAX_ID_LEN} chars) or an integer", rid, None)
    _check_fields(obj, _TOP_FIELDS, "", rid)
    kind = obj.get("type", _MISSING)
    if kind is _MISSING:
        raise _invalid("type", "one of " + ", ".join(allowed_types), kind, rid)
    if kind not in allowed_types:
        raise MessageError(
            f"unknown message type {kind!r}; expected one of {', '.join(allowed_types)}",
            field="type",
            expected=" | ".join(allowed_types),
            got=kind,
            request_id=rid,
        )
    required = kind in ("subscribe", "unsubscribe")
    data = _object(obj.get("data", _MISSING), "data", rid, required=required)
    msg = ClientMessage(kind, rid, data)
    if kind == "subscribe":
        msg.subscribe = _subscribe(data, rid)
    elif kind == "unsubscribe":
        _check_fields(data, ("stream_id",), "data", rid)
        stream_id = data.get("stream_id", _MISSING)
        if not isinstance(stream_id, str) or not stream_id:
            raise _invalid(
                "data.stream_id", "the stream_id string from 'subscribed'", stream_id, rid
            )
        msg.stream_id = stream_id
    elif kind == "ping":
        _check_fields(data, ("timestamp",), "data", rid)
    else:
        _check_fields(data, (), "data", rid)
    return msg


def _subscribe(data: dict, rid: str | int | None) -> Subscribe:
    _check_fields(data, ("contract_id", "tick_types", "config"), "data", rid)
    contract = contract_spec(data.get("contract_id", _MISSING), "data.contract_id", rid)
    if "tick_types" not in data:
        raise _invalid("data.tick_types", "a list such as ['bid_ask', 'last']", _MISSING, rid)
    types = tick_types(data["tick_types"], rid)
    config = _object(data.get("config", _MISSING), "data.config", rid, required=False)
    _check_fields(config, ("limit", "timeout_seconds", "resume_from"), "data.config", rid)
    out = Subscribe(contract, types)
    if config.get("limit") is not None:
        out.limit = positive_int(config["limit"], "data.config.limit", rid)
    if config.get("timeout_seconds") is not None:
        out.timeout = positive_number(config["timeout_seconds"], "data.config.timeout_seconds", rid)
    if config.get("resume_from") is not None:
        out.resume_from = resume_positions(
            config["resume_from"], types, "data.config.resume_from", rid
        )
    return out


def resume_positions(
    value: object, types: list[TickType], path: str, rid: str | int | None = None
) -> dict[TickType, int]:
    """`resume_from`: one sequence (only with one tick type) or {tick_type: sequence}.

    Sequences are counted per tick type, so one number cannot say where several streams
    stopped; a map can.
    """
    if not isinstance(value, dict):
        if len(types) != 1:
            raise MessageError(
                f"'{path}' as one number needs exactly one tick type; with several give one "
                'sequence per type, e.g. {"bid_ask": 50, "last": 3}',
                field=path,
                request_id=rid,
            )
        return {types[0]: sequence_number(value, path, rid)}
    out: dict[TickType, int] = {}
    for name, seq in value.items():
        try:
            tick_type = TickType.parse(name)
        except StreamError:
            tick_type = None
        if tick_type not in types:
            raise _invalid(
                f"{path}.{name}",
                f"one of the subscribed tick types {[t.value for t in types]}",
                name,
                rid,
            )
        out[tick_type] = sequence_number(seq, f"{path}.{name}", rid)  # type: ignore[index]
    return out


def parse_resume_text(text: str, types: list[TickType], name: str) -> dict[TickType, int]:
    """SSE form of resume_from / Last-Event-ID: `50`, or `bid_ask:50,last:3`."""
    text = text.strip()
    if ":" not in text:
        return resume_positions(_number_param(name, text, lambda v, _p: v), types, name)
    pairs: dict[str, object] = {}
    for part in text.split(","):
        key, _, seq = part.partition(":")
        pairs[key.strip()] = _number_param(name, seq.strip(), lambda v, _p: v)
    return resume_positions(pairs, types, name)


def _number_param(name: str, text: str, parse) -> object:
    try:
        value: object = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            value = text
    return parse(value, name)


def parse_sse_params(
    contract: str,
    tick_type: str | None,
    params: Iterable[tuple[str, str]],
    last_event_id: str | None = None,
) -> Subscribe:
    """Validate an SSE request: path parts, `limit`, `timeout`, `tick_types`, `resume_from`.

    `tick_type` is the path segment of /v2/stream/{contract_id}/{tick_type}; None means the
    multi-type endpoint, where `tick_types` is required. `Last-Event-ID` counts as resume_from.
    `token` is accepted (EventSource cannot send headers) and not used yet: never log it.
    """
    allowed = ("limit", "timeout", "resume_from", "token")
    allowed += () if tick_type else ("tick_types",)
    seen: dict[str, str] = {}
    for key, value in params:
        if key not in allowed:
            raise MessageError(
                f"unknown query parameter '{key}'; allowed: {', '.join(allowed)}",
                field=key,
                details={"allowed": list(allowed)},
            )
        if key in seen:
            raise MessageError(f"query parameter '{key}' given more than once", field=key)
        seen[key] = value
    spec = contract_spec(contract, "contract_id")
    if tick_type is not None:
        types = tick_types([tick_type])
    elif "tick_types" not in seen:
        raise _invalid("tick_types", "a list such as ?tick_types=bid_ask,last", _MISSING, None)
    else:
        types = tick_types(seen["tick_types"])
    out = Subscribe(spec, types)
    if "limit" in seen:
        out.limit = _number_param("limit", seen["limit"], positive_int)  # type: ignore[assignment]
    if "timeout" in seen:
        out.timeout = _number_param("timeout", seen["timeout"], positive_number)  # type: ignore[assignment]
    resume = seen.get("resume_from")
    if resume is None and last_event_id:
        resume, name = last_event_id, "Last-Event-ID"
    else:
        name = "resume_from"
    if resume is not None:
        out.resume_from = parse_resume_text(resume, types, name)
    return out
