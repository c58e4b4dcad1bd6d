"""The client's plain HTTP requests to the server (`/health`, `/v2/contracts`, the SSE
transport's responses): one way to make the httpx client, one way to ask with a deadline,
and one way to read an HTTP error answer as the typed error."""

from __future__ import annotations

import asyncio
import functools
import ssl
from typing import Any

import httpx
import orjson

from ibstream.client.options import ClientOptions, auth_headers
from ibstream.client.transport import connection_error, timeout_error
from ibstream.errors import ErrorCode, StreamError, error_from_body
from ibstream.protocol.loopback import is_loopback_url

_STATUS = {404: ErrorCode.CONTRACT_NOT_FOUND, 429: ErrorCode.RATE_LIMIT_EXCEEDED}


def http_client(
    base: str, token: str | None, options: ClientOptions, **kwargs: Any
) -> httpx.AsyncClient:
    """An httpx client of `base` with the token and the client's timeouts (`kwargs` add to
    or replace httpx's settings, e.g. a read timeout)."""
    settings = {
        "timeout": httpx.Timeout(options.request_timeout, connect=options.connect_timeout),
        "verify": _tls(),
        "trust_env": not is_loopback_url(base),  # a local server's token never goes to a proxy
        **kwargs,
    }
    return httpx.AsyncClient(base_url=base, headers=auth_headers(token), **settings)


def sse_client(base: str, token: str | None, options: ClientOptions) -> httpx.AsyncClient:
    """The SSE transport's client of `base`: reads time out only after `sse_idle_timeout`
    (the server pings every 15 s while idle), any number of responses at once."""
    timeout = httpx.Timeout(
        options.request_timeout, connect=options.connect_timeout, read=options.sse_idle_timeout
    )
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=4)
    return http_client(base, token, options, timeout=timeout, limits=limits)


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's default TLS context, made once: loading the CA bundle takes about 20 ms,
    which every client (and every `history` call of a new one) would pay again."""
    return httpx.create_ssl_context()


async def get(
    http: httpx.AsyncClient,
    path: str,
    timeout: float,
    setting: str = "request_timeout",
    params: dict | None = None,
) -> httpx.Response:
    """GET `path` within `timeout` s; a timeout or an unreachable server as the client's
    typed errors (naming the `setting` that bounds the wait)."""
    base = str(http.base_url).rstrip("/")
    try:
        async with asyncio.timeout(timeout):
            return await http.get(path, params=params)
    except TimeoutError:
        raise timeout_error(f"GET {base}{path}", timeout, setting) from None
    except httpx.HTTPError as exc:
        raise connection_error(f"cannot reach {base}", exc, url=base) from None


async def error_from_response(response: httpx.Response) -> StreamError:
    """The typed error of an HTTP error answer (`{"error": {...}}`), or one from its status."""
    try:
        return error_from_body(orjson.loads(await response.aread())["error"])
    except (KeyError, TypeError, orjson.JSONDecodeError, httpx.HTTPError):
        code = _STATUS.get(response.status_code, ErrorCode.INTERNAL_ERROR)
        return StreamError(code, f"HTTP {response.status_code} from {response.request.url}")
