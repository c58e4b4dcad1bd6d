"""What the two transports share: the interface the client drives, and error helpers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from ibstream.client.events import EventLog
from ibstream.client.options import ClientOptions
from ibstream.client.servers import Servers
from ibstream.client.subscription import Subscription
from ibstream.errors import ErrorCode, StreamError


class Transport(Protocol):
    """One client's link to the server; it reconnects and resumes by itself."""

    name: str

    async def start(self) -> None:
        """Reach the server once (raise StreamConnectionError within connect_timeout if not)."""

    async def open(self, sub: Subscription) -> None:
        """Subscribe on the server and keep the subscription across reconnects."""

    def drop(self, sub: Subscription) -> None:
        """End a subscription now and stop it on the server without waiting for a reply."""

    async def settle(self) -> None:
        """Let the drops reach the server (within close_timeout whatever the link does)."""

    async def ping(self) -> float:
        """Round-trip time to the server in seconds."""

    def stream_room(self) -> int | None:
        """Streams that still fit on this connection; None where no such limit applies."""

    async def close(self) -> None:
        """Release every socket and task, within close_timeout."""


def make_transport(
    kind: str, servers: Servers, token: str | None, options: ClientOptions, events: EventLog
) -> Transport:
    """A transport of `kind` (imported only when a client connects) over `servers`."""
    if kind == "sse":
        from ibstream.client.sse import SSETransport

        return SSETransport(servers, token, options, events)
    from ibstream.client.ws import WebSocketTransport

    return WebSocketTransport(servers, token, options, events)


HINT = "; is the server running (`ibstream serve`) and reachable?"


def connection_error(what: str, exc: BaseException | str, **details: object) -> StreamError:
    reason = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
    return StreamError(
        ErrorCode.CONNECTION_ERROR,
        f"{what}: {reason}{HINT}",
        details={k: v for k, v in details.items() if v is not None},
    )


async def connect_in_order(servers: Servers, attempt: Callable[[], Awaitable[object]]) -> None:
    """Run `attempt` against each server in turn, from the one in use: the first that
    answers stays in use. A refusal retrying cannot help (AUTH_REQUIRED ...) is raised as
    it is; none answering is the error naming them all."""
    errors: list[StreamError] = []
    for base in servers.in_order():
        servers.use(base)
        try:
            await attempt()
            return
        except StreamError as exc:
            if not exc.recoverable:
                raise
            errors.append(exc)
    raise none_answered(servers, errors)


def none_answered(servers: Servers, errors: list[StreamError]) -> StreamError:
    """The error of a connect that reached none of `servers` (one server: its own error)."""
    if len(errors) == 1:
        return errors[0]
    reasons = "; ".join(error.message.removesuffix(HINT) for error in errors)
    return connection_error(
        f"cannot connect to any of {servers.describe()}", reasons, urls=list(servers.urls)
    )


def gave_up(servers: Servers, why: str, url: str) -> StreamError:
    """Out of reconnect attempts: the error naming every server tried (one server: `url`,
    the address the transport used)."""
    if len(servers.urls) == 1:
        return connection_error("gave up reconnecting", why, url=url)
    return connection_error(
        f"gave up reconnecting to {servers.describe()}", why, urls=list(servers.urls)
    )


def timeout_error(
    what: str, seconds: float, setting: str = "request_timeout", **details: object
) -> StreamError:
    """`setting`: the option that set this deadline, so the message says what to raise."""
    return StreamError(
        ErrorCode.STREAM_TIMEOUT,
        f"{what}: no answer within {seconds:g} s ({setting}); the server may be "
        "overloaded or unreachable",
        details={"timeout_seconds": seconds, **details},
    )
