"""Client settings: timeouts, reconnect backoff, queue bounds and the server's URLs."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from ibstream.protocol.auth import token_from_env
from ibstream.protocol.backoff import Backoff as Backoff  # its home before the bus shared it

TRANSPORTS = ("websocket", "sse")


@dataclass(frozen=True)
class ClientOptions:
    """Everything that bounds a client: no call waits longer than its timeout."""

    request_timeout: float = 10.0  # subscribe / unsubscribe / ping answer
    connect_timeout: float = 10.0  # TCP + handshake + greeting
    close_timeout: float = 2.0  # close() returns within about this, whatever the server does
    sse_idle_timeout: float = 45.0  # no byte for this long on an SSE response: reconnect
    ping_interval: float = 15.0  # SSE with no open response: GET /health this often
    max_queue: int = 10_000  # ticks waiting in one iterator before it fails (SLOW_CONSUMER)
    backoff: Backoff | None = field(default_factory=Backoff)  # None: never reconnect

    def __post_init__(self) -> None:
        names = ("request_timeout", "connect_timeout", "close_timeout", "sse_idle_timeout")
        for name in (*names, "ping_interval"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.max_queue < 1:
            raise ValueError("max_queue must be at least 1")


def base_url(server: str) -> str:
    """`http(s)://host:port` from what a user types: a URL (http, https, ws, wss) or host:port."""
    text = server.strip().rstrip("/")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"server must look like http://127.0.0.1:8001; got {server!r}")
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def ws_url(base: str) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, "/v2/ws/stream", "", ""))


def env_token(token: str | None) -> str | None:
    """`token`, else `$IBSTREAM_TOKEN` (the server's `--token` default) when set."""
    return token if token is not None else token_from_env()


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}
