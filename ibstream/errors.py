"""Error codes, WebSocket close codes, typed errors and the mapping from IB's error numbers.

Every error a client sees has a code, a message a person can act on, details and whether
retrying can help. `StreamError(code, ...)` builds the subclass for its code (e.g.
`ContractNotFound`), so `except ContractNotFound` works wherever the error was raised.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any


class ErrorCode(StrEnum):
    CONTRACT_NOT_FOUND = "CONTRACT_NOT_FOUND"
    CONNECTION_ERROR = "CONNECTION_ERROR"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    INVALID_TICK_TYPE = "INVALID_TICK_TYPE"
    STREAM_TIMEOUT = "STREAM_TIMEOUT"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    INVALID_MESSAGE = "INVALID_MESSAGE"
    AUTH_REQUIRED = "AUTH_REQUIRED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    SLOW_CONSUMER = "SLOW_CONSUMER"
    STREAM_NOT_FOUND = "STREAM_NOT_FOUND"


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL = 1011
    INVALID_MESSAGE = 4000
    AUTH_REQUIRED = 4001
    INVALID_CONTRACT = 4002
    IB_CONNECTION_LOST = 4003


_RECOVERABLE = {
    ErrorCode.CONNECTION_ERROR,
    ErrorCode.RATE_LIMIT_EXCEEDED,
    ErrorCode.STREAM_TIMEOUT,
    ErrorCode.SLOW_CONSUMER,
    ErrorCode.INTERNAL_ERROR,
}

_HTTP_STATUS = {
    ErrorCode.CONTRACT_NOT_FOUND: 404,
    ErrorCode.STREAM_NOT_FOUND: 404,
    ErrorCode.CONNECTION_ERROR: 503,
    ErrorCode.RATE_LIMIT_EXCEEDED: 429,
    ErrorCode.INVALID_TICK_TYPE: 400,
    ErrorCode.INVALID_MESSAGE: 400,
    ErrorCode.STREAM_TIMEOUT: 504,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.AUTH_REQUIRED: 401,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.SLOW_CONSUMER: 429,
}


class StreamError(Exception):
    """An error with a protocol code; `body()` is what goes on the wire.

    Constructing `StreamError` itself returns the typed subclass for the code.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> StreamError:
        if cls is StreamError:  # subclasses (MessageError ...) keep their own signature
            code = args[0] if args else kwargs.get("code")
            cls = _BY_CODE.get(ErrorCode(code), StreamError)
        return super().__new__(cls)

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        details: dict | None = None,
        recoverable: bool | None = None,
    ):
        super().__init__(f"{code}: {message}")
        self.code = ErrorCode(code)
        self.message = message
        self.details = details or {}
        self.recoverable = code in _RECOVERABLE if recoverable is None else recoverable

    def body(self) -> dict:
        return {
            "code": self.code.value,
            "message": self.message,
            "details": self.details,
            "recoverable": self.recoverable,
        }

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self.code, 400)

    def __reduce__(self) -> tuple:  # picklable although __init__ takes two arguments
        return (_rebuild, (self.code.value, self.message, self.details, self.recoverable))


def _rebuild(code: str, message: str, details: dict, recoverable: bool) -> StreamError:
    return StreamError(code, message, details=details, recoverable=recoverable)


class ContractNotFound(StreamError):
    """CONTRACT_NOT_FOUND: no contract for the conId or symbol."""


class StreamConnectionError(StreamError):
    """CONNECTION_ERROR: the server (or IB behind it) cannot be reached."""


class RateLimitExceeded(StreamError):
    """RATE_LIMIT_EXCEEDED: too many connections or streams, or no free IB slot."""


class InvalidTickType(StreamError):
    """INVALID_TICK_TYPE: not one of last, all_last, bid_ask, mid_point (or IB's names)."""


class StreamTimeout(StreamError):
    """STREAM_TIMEOUT: a request got no answer in time."""


class PermissionDenied(StreamError):
    """PERMISSION_DENIED: the account may not receive this data."""


class InvalidMessage(StreamError):
    """INVALID_MESSAGE: a request the server could not accept."""


class AuthRequired(StreamError):
    """AUTH_REQUIRED: the server wants a token."""


class InternalError(StreamError):
    """INTERNAL_ERROR: the server failed; retrying may help."""


class SlowConsumer(StreamError):
    """SLOW_CONSUMER: a reader fell too far behind and was cut off."""


class StreamNotFound(StreamError):
    """STREAM_NOT_FOUND: no such open stream."""


_BY_CODE: dict[ErrorCode, type[StreamError]] = {
    ErrorCode.CONTRACT_NOT_FOUND: ContractNotFound,
    ErrorCode.CONNECTION_ERROR: StreamConnectionError,
    ErrorCode.RATE_LIMIT_EXCEEDED: RateLimitExceeded,
    ErrorCode.INVALID_TICK_TYPE: InvalidTickType,
    ErrorCode.STREAM_TIMEOUT: StreamTimeout,
    ErrorCode.PERMISSION_DENIED: PermissionDenied,
    ErrorCode.INVALID_MESSAGE: InvalidMessage,
    ErrorCode.AUTH_REQUIRED: AuthRequired,
    ErrorCode.INTERNAL_ERROR: InternalError,
    ErrorCode.SLOW_CONSUMER: SlowConsumer,
    ErrorCode.STREAM_NOT_FOUND: StreamNotFound,
}


def error_from_body(body: dict) -> StreamError:
    """The typed error for an error body from the wire (`code`, `message`, `details` ...)."""
    try:
        code = ErrorCode(body.get("code"))
    except ValueError:  # a code this client does not know yet
        code = ErrorCode.INTERNAL_ERROR
    details = dict(body.get("details") or {})
    if body.get("code") != code.value:
        details.setdefault("server_code", body.get("code"))
    return StreamError(
        code,
        str(body.get("message") or code.value),
        details=details,
        recoverable=body.get("recoverable"),
    )


# IB error numbers (TWS API message codes) and what they mean for a stream.
IB_ADVISORIES = frozenset({2104, 2106, 2107, 2108, 2119, 2158, 10089, 10090, 10167})
IB_CONNECTIVITY_LOST = 1100
IB_RESTORED_DATA_LOST = 1101
IB_RESTORED_DATA_KEPT = 1102

_IB_TO_CODE = {
    200: ErrorCode.CONTRACT_NOT_FOUND,
    321: ErrorCode.INVALID_MESSAGE,
    354: ErrorCode.PERMISSION_DENIED,
    10168: ErrorCode.PERMISSION_DENIED,
    10197: ErrorCode.PERMISSION_DENIED,
    10190: ErrorCode.RATE_LIMIT_EXCEEDED,
    162: ErrorCode.RATE_LIMIT_EXCEEDED,
    322: ErrorCode.INTERNAL_ERROR,
    326: ErrorCode.CONNECTION_ERROR,
    502: ErrorCode.CONNECTION_ERROR,
    504: ErrorCode.CONNECTION_ERROR,
    1100: ErrorCode.CONNECTION_ERROR,
}


_IB_HINTS = {
    162: "IB's historical data service refused the request",
    200: "check the symbol or conId (GET /v2/contracts?symbol=...)",
    321: "IB found the request invalid; check the contract spec (exchange, currency, expiry)",
    354: "the account has no market data permission for this contract",
    10168: "the account has no market data permission for this contract",
    10197: "market data is in use by another session of this account (competing live session)",
    10190: "the account has no free tick-by-tick slot; close another stream",
    326: "another API client uses this client id; pass a different --client-id",
}


def from_ib_error(
    ib_code: int, ib_message: str, doing: str = "", /, **details: object
) -> StreamError:
    """Translate an IB error into a protocol error, keeping IB's number in `details.ib_code`
    whatever the mapping (`doing` prefixes the message, e.g. "looking up 'ES'")."""
    code = _IB_TO_CODE.get(ib_code, ErrorCode.INTERNAL_ERROR)
    hint = _IB_HINTS.get(ib_code)
    message = f"IB error {ib_code}: {ib_message}" + (f" ({hint})" if hint else "")
    if doing:
        message = f"{doing}: {message}"
    return StreamError(code, message, details={**details, "ib_code": ib_code})
