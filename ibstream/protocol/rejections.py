"""Rejections of client input: a pydantic error becomes an INVALID_MESSAGE (or
INVALID_TICK_TYPE) that names the field, says what was expected and what arrived.

The most telling error wins: shallow before deep, so an unknown top-level field is reported
before a bad value inside `data`. Whatever arrived is shown so that any encoder can write it:
long text clipped, numbers JSON cannot carry as text (`_preview`).
"""

from __future__ import annotations

import typing
from collections.abc import Iterable

from pydantic import BaseModel, ValidationError

from ibstream.errors import ErrorCode, StreamError
from ibstream.model import TickType
from ibstream.protocol import requests as rq
from ibstream.protocol.encode import clip, encodable

MISSING = object()
SHOWN_CHARS = 80  # of a value or a field name quoted back to the client
_SUPPORTED = [t.value for t in TickType]


class MessageError(StreamError):
    """A rejected client message; carries the request id when the message had a usable one."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        expected: str | None = None,
        got: object = MISSING,
        request_id: str | int | None = None,
        code: ErrorCode = ErrorCode.INVALID_MESSAGE,
        details: dict | None = None,
        recoverable: bool | None = None,
    ):
        info = dict(details or {})
        if field is not None:
            info["field"] = field
        if expected is not None:
            info["expected"] = expected
        if got is not MISSING and got is not None:  # nothing arrived: no `got` (never null)
            info["got"] = _preview(got)
        super().__init__(code, message, details=info, recoverable=recoverable)
        self.request_id = request_id


def _preview(value: object) -> object:
    """`value` as shown in an error: long text cut, containers by type, and numbers JSON
    cannot carry as text (no inf in JSON, orjson would write null; no ints beyond 64 bits)."""
    return encodable(value, depth=0, chars=SHOWN_CHARS)


def quoted(value: object) -> str:
    """How an error's text names a value: as JSON would say it where Python differs."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else repr(_preview(value))


def invalid(path: str, expected: str, got: object, rid: str | int | None) -> MessageError:
    if got is MISSING:
        shown = "missing"
    else:
        shown = f"got {quoted(got)}"
    return MessageError(
        f"field '{path}' must be {expected}; {shown}",
        field=path,
        expected=expected,
        got=got,
        request_id=rid,
    )


def _expected(path: str, root: type[BaseModel] | None = None) -> str:
    """What a field (or the nearest field above it) must be, as quoted in errors: the
    model's own word (`EXPECTED` on the class) before the shared table."""
    own = getattr(root, "EXPECTED", {})
    parts = path.split(".")
    while parts:
        key = ".".join(parts)
        found = own.get(key, rq.EXPECTED.get(key))
        if found is not None:
            return found
        parts.pop()
    return "a valid value"


def _model_at(model: type[BaseModel] | None, parts: list[str]) -> type[BaseModel] | None:
    for part in parts:
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return None
        args = typing.get_args(field.annotation) or (field.annotation,)
        model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model


def from_validation(
    exc: ValidationError,
    rid: str | int | None = None,
    *,
    root: type[BaseModel] | None = None,
    prefix: str = "",
    tags: Iterable[str] = (),
) -> MessageError:
    """The MessageError for the most telling error of a pydantic ValidationError.

    Shallow errors win (an unknown top-level field before a bad value deep inside);
    `tags` are union branch names in error locations, which are not part of a field's path.
    """
    skip = rq.RESUME_TAGS | set(tags)
    errors = exc.errors(include_url=False)
    err = min(errors, key=lambda e: len(e["loc"]))
    parts = [clip(str(p), SHOWN_CHARS) for p in err["loc"] if p not in skip]
    path = ".".join(([prefix] if prefix else []) + parts)
    kind, got = err["type"], err.get("input", MISSING)
    if kind == "extra_forbidden":
        allowed = list((_model_at(root, parts[:-1]) or BaseModel).model_fields)
        top = len(parts) == 1 and root is not None and issubclass(root, rq.Request)
        return MessageError(
            f"unknown field '{path}'; allowed here: {', '.join(allowed) or 'nothing'}"
            + ("; the request was not run, send it without that field" if top else ""),
            field=path,
            request_id=rid,
            details={"allowed": allowed},
            recoverable=True if top else None,
        )
    if kind == "tick_type":
        return MessageError(
            err["msg"],
            code=ErrorCode.INVALID_TICK_TYPE,
            field=path,
            request_id=rid,
            details={"tick_type": _preview(got), "supported": _SUPPORTED},
        )
    if kind == "too_short" and path.endswith("tick_types"):
        return MessageError(
            "tick_types must be a non-empty list such as ['bid_ask', 'last']",
            code=ErrorCode.INVALID_TICK_TYPE,
            field=path,
            request_id=rid,
            details={"supported": _SUPPORTED},
        )
    if kind == "time":  # a history time: the parser says what was wrong with it
        error = invalid(path, _expected(path, root), got, rid)
        error.message += f" ({err['msg']})"
        return error
    return invalid(path, _expected(path, root), MISSING if kind == "missing" else got, rid)
