"""Every historical tick of a range from IB: paged, paced, complete.

`fetch_ticks` covers [start, end) (epoch seconds) with `reqHistoricalTicks` pages of 1,000
forward from `start`. IB's times are whole seconds and a page always ends with every tick of
its last second (even past 1,000: a busy second comes whole), so the next page starts at the
second after it: no tick is asked for twice and none is skipped, and no page is spent
re-sending a second already held. A `Pacer` keeps the requests within IB's pacing rules by
waiting, and a 162 "pacing violation" all the same is retried after a backoff. IB's refusals
become `StreamError`s with IB's code and text in `details`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from itertools import groupby
from operator import attrgetter

import numpy as np
import pyarrow as pa

from ibstream.errors import ErrorCode, StreamError
from ibstream.ib.api import request_historical_ticks
from ibstream.ib.history_wire import SCHEMAS
from ibstream.ib.pacing import Pacer

log = logging.getLogger(__name__)

PAGE = 1000  # IB's most ticks a request
REQUEST_TIMEOUT = 60.0  # seconds for one page's answer
Progress = Callable[[int, int], None]  # (seconds covered, seconds asked for)


_FIELDS = {  # the kind's columns after `time`: the library's attribute of each
    "TRADES": ("price", "size", "exchange", "specialConditions"),
    "BID_ASK": ("priceBid", "priceAsk", "sizeBid", "sizeAsk"),
    "MIDPOINT": ("price",),
}


def _objects_table(what: str, ticks: list) -> pa.Table:
    """The library's historical tick objects as a table of the kind's schema, column by
    column (one pass over the objects per field, no row tuples)."""
    times_of = map(datetime.timestamp, map(attrgetter("time"), ticks))
    arrays = [pa.array(np.fromiter(times_of, np.float64, len(ticks)).astype(np.int64))]
    for name, f in zip(_FIELDS[what], list(SCHEMAS[what])[1:], strict=True):
        arrays.append(pa.array(list(map(attrgetter(name), ticks)), type=f.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMAS[what])


def _answer_table(what: str, answer: list) -> pa.Table:
    """A request's answer as one table: the tables `history_wire` decoded, or the library's
    tick objects (a library without the hook, or a message it had to decode itself)."""
    parts = [
        pa.concat_tables(list(run)) if decoded else _objects_table(what, list(run))
        for decoded, run in groupby(answer, key=lambda item: isinstance(item, pa.Table))
    ]
    if len(parts) == 1:
        return parts[0]
    return pa.concat_tables(parts) if parts else SCHEMAS[what].empty_table()


def _table(what: str, pages: list[pa.Table], requests: int) -> pa.Table:
    """The pages as one table of the kind's schema, metadata `requests`."""
    schema = SCHEMAS[what].with_metadata({"requests": str(requests)})
    if not pages:
        return schema.empty_table()
    return pa.concat_tables(
        [p.replace_schema_metadata(None) for p in pages]
    ).replace_schema_metadata(schema.metadata)


def _ib_time(second: int) -> str:
    return f"{datetime.fromtimestamp(second, UTC):%Y%m%d %H:%M:%S} UTC"


def check_range(what: object, start: object, end: object, now: float) -> None:
    """Each bad argument as INVALID_MESSAGE naming it."""

    def bad(message: str, **details: object) -> StreamError:
        return StreamError(ErrorCode.INVALID_MESSAGE, message, details=details)

    if what not in SCHEMAS:
        raise bad(f"what must be one of {tuple(SCHEMAS)}, not {what!r}", field="what")
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad(f"{name} must be epoch seconds (int), not {value!r}", field=name)
    assert isinstance(start, int) and isinstance(end, int)
    if start >= end:
        raise bad(f"start ({start}) must be before end ({end})", field="start")
    if end > int(now):
        raise bad(
            f"end ({_ib_time(end)}) is in the future: IB's history ends at the last whole "
            f"second ({_ib_time(int(now))})",
            field="end",
        )


def _refusal(code: int, text: str, contract: object, what: str, cursor: int) -> StreamError:
    """IB's refusal of a page as the error a caller can act on."""
    details = {"ib_code": code, "ib_message": text, "what": what, "at": cursor}
    lowered = text.lower()
    if code == 354 or "permission" in lowered:
        kind, hint = ErrorCode.PERMISSION_DENIED, "the account has no history permission"
    elif "no data" in lowered:
        kind, hint = ErrorCode.STREAM_NOT_FOUND, "IB keeps no ticks that far back"
    elif code == 200:
        kind, hint = ErrorCode.CONTRACT_NOT_FOUND, "IB does not know the contract"
    else:
        kind, hint = ErrorCode.INVALID_MESSAGE, "IB refused the request"
    message = (
        f"historical {what} of {contract} from {_ib_time(cursor)}: IB error {code}: {text} ({hint})"
    )
    return StreamError(kind, message, details=details)


async def _ask(
    ib: object, contract: object, what: str, cursor: int, use_rth: bool
) -> tuple[pa.Table, list[tuple[int, str]]]:
    """One request: its ticks (a table of the kind's schema) and the errors IB sent for it."""
    errors: list[tuple[int, str]] = []
    req_id = -1

    def on_error(rid: int, code: int, text: str, *_: object) -> None:
        if rid == req_id:
            errors.append((code, text))

    ib.errorEvent += on_error  # type: ignore[attr-defined]
    try:
        req_id, future = request_historical_ticks(
            ib, contract, _ib_time(cursor), "", PAGE, what, use_rth
        )
        ticks = await asyncio.wait_for(future, REQUEST_TIMEOUT)
    except TimeoutError:
        raise StreamError(
            ErrorCode.STREAM_TIMEOUT,
            f"IB did not answer historical {what} from {_ib_time(cursor)} in {REQUEST_TIMEOUT:g} s",
            details={"what": what, "at": cursor},
        ) from None
    except ConnectionError as exc:
        raise StreamError(
            ErrorCode.CONNECTION_ERROR,
            f"the IB connection ended during historical {what} from {_ib_time(cursor)}: {exc}",
            details={"what": what, "at": cursor},
        ) from exc
    except Exception as exc:  # RaiseRequestErrors: the error event has it already
        if getattr(exc, "reqId", None) != req_id:
            raise
        ticks = []
    finally:
        ib.errorEvent -= on_error  # type: ignore[attr-defined]
    return _answer_table(what, list(ticks)), errors


async def _page(
    ib: object, contract: object, what: str, cursor: int, use_rth: bool, pacer: Pacer
) -> pa.Table:
    """One page from `cursor`, retried after pacing violations."""
    identity = (getattr(contract, "conId", 0) or repr(contract), what, cursor, use_rth)
    kind = identity[:2]
    for attempt in range(pacer.retries + 1):
        await pacer.slot(identity, kind)
        ticks, errors = await _ask(ib, contract, what, cursor, use_rth)
        if not errors:
            return ticks
        code, text = errors[0]
        if code != 162 or "pacing violation" not in text.lower():
            raise _refusal(code, text, contract, what, cursor)
        log.info("pacing violation on %s from %s; retrying", what, _ib_time(cursor))
        if attempt < pacer.retries:
            await pacer.backoff(attempt)
    raise StreamError(
        ErrorCode.RATE_LIMIT_EXCEEDED,
        f"IB refused historical {what} from {_ib_time(cursor)} for pacing "
        f"{pacer.retries + 1} times in a row",
        details={"ib_code": 162, "what": what, "at": cursor},
    )


async def pages(
    ib: object,
    contract: object,
    what: str,
    start: int,
    end: int,
    *,
    use_rth: bool = False,
    pacer: Pacer | None = None,
) -> AsyncIterator[pa.Table]:
    """`fetch_ticks` one page at a time (memory: one page, whatever the range): each page's
    ticks of [start, end) as a table of the kind's schema, metadata `requests` = 1 and
    `reached` = the first IB second not yet covered. A refusal raises `StreamError` with
    IB's code and text (the pages before it were yielded)."""
    check_range(what, start, end, time.time())
    pacer = pacer or Pacer()
    cursor = start
    while cursor < end:
        page = await _page(ib, contract, what, cursor, use_rth, pacer)
        times = page.column("time").to_numpy()
        if len(times) < PAGE:  # IB has nothing more up to now
            cursor = end
        else:
            cursor = max(cursor, int(times[-1])) + 1
        if len(times) and times[-1] >= end:  # IB's last second may reach past `end`
            page = page.filter(pa.array(times < end))
        yield page.replace_schema_metadata({"requests": "1", "reached": str(min(cursor, end))})


async def fetch_ticks(
    ib: object,
    contract: object,
    what: str,
    start: int,
    end: int,
    *,
    use_rth: bool = False,
    pacer: Pacer | None = None,
    progress: Progress | None = None,
) -> pa.Table:
    """Every `what` ("TRADES", "BID_ASK", "MIDPOINT") tick of [start, end) (epoch seconds,
    IB's one-second times) of a qualified contract, oldest first, as an Arrow table (`time`
    in IB seconds; metadata `requests`: the pages it took). Share one `pacer` among the
    fetches of one IB connection. A refusal raises `StreamError` with IB's code and text in
    `details` and the ticks fetched before it as `.partial`."""
    check_range(what, start, end, time.time())
    tables: list[pa.Table] = []
    requests = 0
    try:
        async for page in pages(ib, contract, what, start, end, use_rth=use_rth, pacer=pacer):
            requests += 1
            tables.append(page)
            if progress is not None:
                progress(int(page.schema.metadata[b"reached"]) - start, end - start)
    except StreamError as exc:
        exc.partial = _table(what, tables, requests)  # type: ignore[attr-defined]
        raise
    return _table(what, tables, requests)
