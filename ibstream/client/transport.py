"""What the two transports share: the interface the client drives, and error helpers."""

from __future__ import annotations

from typing import Protocol

from ibstream.client.subscription import Subscription
from ibstream.errors import ErrorCode, StreamError


class Transport(Protocol):
    """One client's link to the server; it reconnects and resumes by itself."""

    name: str

    async def start(self) -> None:
        """Reach the server once (raise StreamConnectionError within connect_timeout if not)."""

    async def open(self, sub: Subscription) -> None:
        """Subscribe on the server and keep the subscription across reconnects."""

    async def cancel(self, sub: Subscription) -> None:
        """Stop a subscription on the server (bounded by the request timeout)."""

    async def ping(self) -> float:
        """Round-trip time to the server in seconds."""

    async def close(self) -> None:
        """Release every socket and task, within close_timeout."""


def connection_error(what: str, exc: BaseException | str, **details: object) -> StreamError:
    reason = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
    return StreamError(
        ErrorCode.CONNECTION_ERROR,
        f"{what}: {reason}; is the server running (`ibstream serve`) and reachable?",
        details={k: v for k, v in details.items() if v is not None},
    )


def timeout_error(what: str, seconds: float, **details: object) -> StreamError:
    return StreamError(
        ErrorCode.STREAM_TIMEOUT,
        f"{what}: no answer within {seconds:g} s (request_timeout); the server may be "
        "overloaded or unreachable",
        details={"timeout_seconds": seconds, **details},
    )
