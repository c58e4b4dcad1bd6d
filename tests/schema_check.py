"""The suite-wide check that every message a server sends matches the published schema.

Servers started by the fixtures get `settings.sent_observer = SENT` (a `SchemaCheck`); an
autouse fixture in conftest fails the test whose server sent an invalid message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import fastjsonschema
import orjson

from ibstream.protocol.arrow import decode_frame, is_arrow_frame
from ibstream.protocol.schema import schema_document


def _validators() -> dict[str, Callable[[object], object]]:
    """One compiled validator per server message type (clearer errors than the oneOf)."""
    doc = schema_document()
    mapping = doc["$defs"]["ServerMessage"]["discriminator"]["mapping"]
    return {
        kind: fastjsonschema.compile({"$ref": ref, "$defs": doc["$defs"]})
        for kind, ref in mapping.items()
    }


class SchemaCheck:
    """A `sent_observer`: validates each payload, keeps (payload, reason) of the bad ones."""

    def __init__(self) -> None:
        self.validators = _validators()
        self.failures: list[tuple[bytes, str]] = []
        self.checked = 0
        self._lock = threading.Lock()  # threaded servers call it from their own thread

    def __call__(self, payload: bytes) -> None:
        reason = self.problem(payload)
        with self._lock:
            self.checked += 1
            if reason is not None:
                self.failures.append((payload, reason))

    def problem(self, payload: bytes) -> str | None:
        """Why `payload` is not a valid server message, or None if it is. A binary Arrow
        frame must hold exactly the published columns (`protocol/arrow.py`)."""
        if is_arrow_frame(payload):
            try:
                decode_frame(payload)
            except ValueError as exc:
                return str(exc)
            return None
        try:
            msg = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return f"not JSON: {exc}"
        kind = msg.get("type") if isinstance(msg, dict) else None
        validate = self.validators.get(kind)  # type: ignore[arg-type]
        if validate is None:
            return f"unknown message type {kind!r}"
        try:
            validate(msg)
        except fastjsonschema.JsonSchemaException as exc:
            return exc.message
        return None

    def take(self) -> list[tuple[bytes, str]]:
        with self._lock:
            failures, self.failures = self.failures, []
        return failures


SENT = SchemaCheck()
