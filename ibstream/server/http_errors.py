"""Every HTTP error as the protocol's JSON error body: `{"error": {code, message, details,
recoverable}}`, also for unknown paths (404), wrong methods (405) and failures (500), so a
client reads one shape whatever went wrong.

A failure is answered by `CatchFailures`, inside the guard's CORS layer (so an allowed page
can read the 500) and logged once; Starlette's outermost handler would answer outside CORS
and re-raise, so uvicorn logged the same traceback a second time.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ibstream.errors import ErrorCode, StreamError
from ibstream.protocol.encode import PROTOCOL_VERSION

log = logging.getLogger(__name__)
_HEADERS = {"X-IB-Stream-Version": PROTOCOL_VERSION}


def _answer(status: int, error: StreamError, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": error.body()}, status, headers={**_HEADERS, **(headers or {})})


def _endpoints(request: Request) -> list[str]:
    return sorted({getattr(r, "path", "") for r in request.app.routes} - {""})


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    path, method = request.url.path, request.method
    if exc.status_code == 404:
        error = StreamError(
            ErrorCode.INVALID_MESSAGE,
            f"no endpoint {path}; see /docs for the endpoints",
            details={"path": path, "endpoints": _endpoints(request)},
        )
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        error = StreamError(
            ErrorCode.INVALID_MESSAGE,
            f"method {method} is not allowed on {path}; use {allowed or 'another method'}",
            details={"path": path, "method": method, "allowed": allowed.split(", ")},
        )
    else:
        error = StreamError(
            ErrorCode.INTERNAL_ERROR if exc.status_code >= 500 else ErrorCode.INVALID_MESSAGE,
            str(exc.detail),
            details={"path": path},
        )
    return _answer(exc.status_code, error, exc.headers)


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"][1:]) or str(first["loc"][0])
    error = StreamError(
        ErrorCode.INVALID_MESSAGE,
        f"field '{field}': {first['msg']}",
        details={"field": field, "got": first.get("input")},
    )
    if error.details["got"] is None:  # nothing arrived: absent, never null
        del error.details["got"]
    return _answer(400, error)


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    error = StreamError(
        ErrorCode.INTERNAL_ERROR,
        f"the server failed: {type(exc).__name__}; see the server log",
    )
    return _answer(500, error)


class CatchFailures:
    """Answers an HTTP request whose endpoint failed with the JSON 500 (logged once), as
    long as nothing of the response was sent yet; later failures go to the server as before."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise
            response = await server_error(Request(scope), exc)
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    """The JSON error handlers; add the guard after this, so it wraps `CatchFailures`."""
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, server_error)  # failures in the middleware itself
    app.add_middleware(CatchFailures)
