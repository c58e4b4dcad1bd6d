"""Who may talk to the server: the token, the `Origin` check, CORS and the bind check.

A pure ASGI middleware (SSE responses pass through unbuffered) in front of every route:

1. `Origin`: a browser page on another origin is refused (403 PERMISSION_DENIED, or a
   WebSocket handshake answered 403) unless listed in `allowed_origins`; so is a browser
   request without Origin that `Sec-Fetch-Site` marks as cross-site (an <img> or <iframe> of
   an SSE URL). Requests without either (Python, curl) pass. Without a token, a request must also address the server by a
   loopback name, so a page whose own name was rebound to 127.0.0.1 gets nothing either.
2. CORS headers and preflight answers, for allowed origins only (Starlette's CORSMiddleware).
3. The token: when set, every request but the open documents (/health, schema, docs) carries
   `Authorization: Bearer <token>` or `?token=<token>`; else 401 / close 4001 AUTH_REQUIRED.

`?token=` is removed from the request before anything else sees it (uvicorn's own log lines
of the connection included), so the token is never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from urllib.parse import unquote_plus, urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ibstream.errors import CloseCode, ErrorCode, StreamError
from ibstream.protocol.auth import TOKEN_ENV
from ibstream.protocol.encode import PROTOCOL_VERSION, error_message
from ibstream.protocol.loopback import is_loopback_host
from ibstream.protocol.redact import redact_logs
from ibstream.server.settings import ServerSettings

# Documents that hold nothing secret: /health lets ensure_server and `status` probe a server.
OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/v2/schema"})
_HEADERS = {"X-IB-Stream-Version": PROTOCOL_VERSION}


def bind_problem(host: str, token: str | None) -> str | None:
    """Why serving on `host` without a token is refused (one sentence), or None."""
    if token or is_loopback_host(host):
        return None
    return (
        f"binding {host} exposes the server (and the IB account's data) to other machines; "
        f"pass --token or set {TOKEN_ENV} (or bind 127.0.0.1)"
    )


def check_bind(settings: ServerSettings) -> None:
    """Refuse to serve beyond this machine without a token (AUTH_REQUIRED)."""
    if problem := bind_problem(settings.host, settings.token):
        raise StreamError(
            ErrorCode.AUTH_REQUIRED, problem, details={"host": settings.host}, recoverable=False
        )


class Guard:
    """The middleware to install (`app.add_middleware(Guard, settings=settings)`): the origin
    check, then CORS, then the token check, in front of `app`."""

    def __init__(self, app: ASGIApp, settings: ServerSettings):
        cors = CORSMiddleware(
            TokenGuard(app, settings.token, settings.sent_observer),
            allow_origins=list(settings.allowed_origins),
            allow_methods=["GET", "HEAD", "OPTIONS"],
            allow_headers=["Authorization", "Last-Event-ID"],
            expose_headers=list(_HEADERS),
        )
        self.app = OriginGuard(cors, settings.allowed_origins, token_required=bool(settings.token))
        redact_logs(LOGGERS_TO_REDACT)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class OriginGuard:
    """Refuses browser pages of origins not allowed, and (without a token) foreign Hosts."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str], *, token_required: bool):
        self.app = app
        self.allowed = frozenset(origin.rstrip("/") for origin in allowed)
        self.allowed_hosts = frozenset(urlsplit(o).netloc.lower() for o in self.allowed)
        self.token_required = token_required

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        strip_token_param(scope)
        headers = _headers(scope)
        origin = headers.get("origin") or _cross_site_origin(headers)
        if origin is not None and not self._origin_ok(origin.rstrip("/"), scope):
            return await refuse(scope, receive, send, _origin_error(origin))
        host = headers.get("host", "")
        if not self.token_required and not self._host_ok(host):
            return await refuse(scope, receive, send, _host_error(host))
        await self.app(scope, receive, send)

    def _origin_ok(self, origin: str, scope: Scope) -> bool:
        return "*" in self.allowed or origin in self.allowed or origin in own_origins(scope)

    def _host_ok(self, host: str) -> bool:
        try:
            name = urlsplit(f"//{host}").hostname or ""
        except ValueError:  # e.g. an unclosed "[" : no name of this machine
            return False
        return not host or is_loopback_host(name) or host.lower() in self.allowed_hosts


class TokenGuard:
    """Lets a request through only with the token (header or query); CORS preflights pass."""

    def __init__(
        self, app: ASGIApp, token: str | None, observer: Callable[[bytes], None] | None = None
    ):
        self.app = app
        self.token = token.encode() if token else None
        self.observer = observer  # sees the WebSocket `error` it sends, as every message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] not in ("http", "websocket") or _is_open(scope):
            return await self.app(scope, receive, send)
        given = scope.get("ibstream.token") or _bearer(_headers(scope).get("authorization"))
        # compare_digest: as long for a wrong token of any length as for a near miss.
        if given is not None and hmac.compare_digest(given, self.token):
            return await self.app(scope, receive, send)
        how = "wrong token" if given is not None else "this server needs a token"
        error = StreamError(
            ErrorCode.AUTH_REQUIRED,
            f"{how}: send the header 'Authorization: Bearer <token>' or add ?token=<token> "
            "to the URL (browsers); the token is the server's --token / $IBSTREAM_TOKEN",
            recoverable=False,
        )
        await refuse(scope, receive, send, error, self.observer)


LOGGERS_TO_REDACT = ("uvicorn.error", "uvicorn.access", "websockets.server")


def strip_token_param(scope: Scope) -> None:
    """Move `?token=` out of the query string into scope["ibstream.token"] (bytes).

    The scope is changed in place on purpose: the server's own view of the request (uvicorn
    logs the path with its query for WebSockets) must never hold the token.
    """
    query: bytes = scope.get("query_string", b"")
    if b"token" not in query:
        return
    kept, token = [], None
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        if unquote_plus(name.decode("latin-1")) == "token":
            token = unquote_plus(value.decode("latin-1")).encode()
        else:
            kept.append(part)
    scope["query_string"] = b"&".join(kept)
    scope["ibstream.token"] = token


def own_origins(scope: Scope) -> set[str]:
    """The origins of pages served by this server itself, as browsers name them."""
    host, port = scope.get("server") or ("127.0.0.1", 0)
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    names = {f"[{host}]" if ":" in host else host, "127.0.0.1", "localhost", "[::1]"}
    return {f"{scheme}://{name}:{port}" for name in names}


async def refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    error: StreamError,
    observer: Callable[[bytes], None] | None = None,
) -> None:
    """HTTP: the JSON error body. WebSocket: 401 as an `error` message (shown to `observer`,
    the settings' sent_observer) then close 4001; 403 as a refused handshake (with the JSON
    body where the server supports it)."""
    if scope["type"] == "http":
        headers = dict(_HEADERS)
        if error.code == ErrorCode.AUTH_REQUIRED:
            headers["WWW-Authenticate"] = "Bearer"
        response = JSONResponse({"error": error.body()}, error.http_status, headers=headers)
        return await response(scope, receive, send)
    if (await receive())["type"] != "websocket.connect":
        return
    if error.code == ErrorCode.AUTH_REQUIRED:
        payload = error_message(error).payload
        if observer is not None:
            observer(payload)
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": payload.decode()})
        await send({"type": "websocket.close", "code": CloseCode.AUTH_REQUIRED})
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        response = JSONResponse({"error": error.body()}, error.http_status, headers=_HEADERS)
        return await response(scope, receive, send)  # Starlette sends it as a denial
    await send({"type": "websocket.close", "code": CloseCode.POLICY})  # before accept: 403


def _cross_site_origin(headers: dict[str, str]) -> str | None:
    """The page behind a request a browser sent without `Origin` (an <img>, <iframe> or
    no-cors fetch of an SSE URL) but marked as coming from another site: the Referer's
    origin, or "null" when the browser hid it. None for programs and same-origin requests."""
    if headers.get("sec-fetch-site") not in ("cross-site", "same-site"):
        return None
    parts = urlsplit(headers.get("referer", ""))
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else "null"


def _origin_error(origin: str) -> StreamError:
    return StreamError(
        ErrorCode.PERMISSION_DENIED,
        f"requests from pages on {origin} are refused; start the server with "
        f"--allow-origin {origin} to let that page in",
        details={"origin": origin},
        recoverable=False,
    )


def _host_error(host: str) -> StreamError:
    return StreamError(
        ErrorCode.PERMISSION_DENIED,
        f"request addressed to {host!r}: without a token this server answers only requests "
        "to localhost / 127.0.0.1 (a page that rebinds its name to this machine gets "
        "nothing); behind a proxy, set --token, or --allow-origin for that host's origin",
        details={"host": host},
        recoverable=False,
    )


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _bearer(value: str | None) -> bytes | None:
    scheme, _, credentials = (value or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip().encode("latin-1")


def _is_open(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["path"] not in OPEN_PATHS:
        return False
    return scope["method"] in ("GET", "HEAD")
