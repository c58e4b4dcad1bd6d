"""The one import seam for the IB client library: ib_insync (default) or ib_async.

ib_async is the maintained fork with the same API; choose it with `IBSTREAM_IB_LIB=ib_async`
or `load("ib_async")`. Nothing else in ibstream imports either library directly, and what
reaches below their public API lives here (`parse_in_slices`) or beside it (`history_wire`,
the historical ticks decoded as columns).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from types import ModuleType

from ibstream.ib.history_wire import column_pages

SUPPORTED = ("ib_insync", "ib_async")
log = logging.getLogger(__name__)


def load(name: str | None = None) -> ModuleType:
    """Import and return the chosen library module (`IB`, `Contract`, tick classes ...)."""
    name = name or os.environ.get("IBSTREAM_IB_LIB", "ib_insync")
    if name not in SUPPORTED:
        raise ValueError(f"IB library must be one of {SUPPORTED}, not {name!r}")
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"{name} is not installed: pip install {name}") from exc


READ_SLICE = 16_384  # bytes of a socket read that ib_insync parses per call


def parse_in_slices(ib: object) -> None:
    """Make ib_insync (or ib_async) parse socket reads READ_SLICE bytes at a time, one slice
    per event-loop pass, reading nothing more until the last slice is parsed.

    Its parser copies the unparsed rest of its buffer after every message, so a read costs
    time quadratic in its size: a process that falls behind gets 256 KiB reads, parses ever
    slower and never catches up, while the WebSocket writers wait for the loop. Sliced, a
    message costs the same whatever the backlog and no callback holds the loop for more
    than a slice's ticks. Each slice is a read as far as the library knows. A library
    without that hook is left as it is."""
    client = getattr(ib, "client", None)
    conn = getattr(client, "conn", None)
    parse = getattr(client, "_onSocketHasData", None)  # the library's own read handler
    if conn is None or parse is None or not hasattr(conn, "hasData"):
        log.debug("%s reads are parsed whole: no hasData hook to slice", type(ib).__module__)
        return

    def feed(data: bytes, start: int = 0, transport: asyncio.Transport | None = None) -> None:
        if transport is not None and (conn.transport is not transport or transport.is_closing()):
            return  # the connection was closed meanwhile: the rest of its bytes are moot
        end = start + READ_SLICE
        parse(data[start:end] if start or end < len(data) else data)
        if end >= len(data):
            if transport is not None:
                transport.resume_reading()
            return
        transport = conn.transport
        if transport is None:
            return
        transport.pause_reading()
        asyncio.get_running_loop().call_soon(feed, data, end, transport)

    conn.hasData -= parse
    conn.hasData += feed


def request_historical_ticks(
    ib: object,
    contract: object,
    start: str,
    end: str,
    number: int,
    what: str,
    use_rth: bool,
) -> tuple[int, asyncio.Future]:
    """Send one reqHistoricalTicks and return (its request id, the future of its ticks:
    tables of the kind's schema where `history_wire` hooks the library's decoder, else the
    library's tick objects).

    What the libraries' `reqHistoricalTicksAsync` does, with the request id kept: an error
    (162, 354 ...) ends the future with an empty list, and only the id ties the error event
    to the request when several run at once."""
    req_id = ib.client.getReqId()  # type: ignore[attr-defined]
    future = ib.wrapper.startReq(req_id, contract)  # type: ignore[attr-defined]
    hook = column_pages(ib)
    if hook is not None:
        hook.watch(req_id, future)
    ib.client.reqHistoricalTicks(  # type: ignore[attr-defined]
        req_id, contract, start, end, number, what, use_rth, False, []
    )
    return req_id, future
