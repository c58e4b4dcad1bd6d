"""`history(contract, tick_types, start, end)`: past ticks from the server as a tick frame.

It reads `GET /v2/history/{contract}?format=arrow`, the fastest of the answer's forms: one
Arrow IPC stream whose record batches are the ticks as columns, in one merged order, each
batch carrying the answer's progress (and the first `started`, the last `complete` or
`error`) as custom metadata. The batches are framed as their bytes arrive
(`arrow_stream.py`) and typed into the frame in one conversion at the end, the path Arrow
live frames take (`columns_from_frame`). The request is plain HTTP, whatever transport the
client streams with.

A partial answer (IB refused a part: no permission, no data, past what IB keeps) returns
what it has and warns `HistoryIncompleteWarning` naming each missing part and IB's code; an
answer with no ticks and something missing raises the error of the first missing part. An
error after the ticks began is raised with what arrived as `.frame`, as `collect` does.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pyarrow as pa

from ibstream.client.arrow_stream import ArrowStreamParser
from ibstream.client.history_args import NS, HistoryQuery
from ibstream.client.http import error_from_response, http_client
from ibstream.client.options import ClientOptions
from ibstream.client.progress import Progress
from ibstream.client.transport import connection_error, timeout_error
from ibstream.errors import ErrorCode, StreamError, error_from_body
from ibstream.protocol.arrow import ARROW_TICK_SCHEMA
from ibstream.protocol.times import iso_ns

# The longest silence between two parts of an answer: IB's pacing may hold the server's next
# request for up to its 10-minute window, and the server sends nothing meanwhile.
IDLE_SECONDS = 660.0
ARROW_TYPE = "application/vnd.apache.arrow.stream"
_EVENTS = ("started", "progress", "complete", "error")


class HistoryIncompleteWarning(UserWarning):
    """A history answer lacks parts (listed in `frame.attrs["history"]["missing"]`)."""


class HistoryEmptyWarning(UserWarning):
    """A history answer is complete and holds no ticks: none happened in that range."""


@dataclass
class HistoryAnswer:
    """A history answer as it arrives: its batches and its messages (the `data` objects)."""

    query: HistoryQuery
    batches: list[pa.RecordBatch] = field(default_factory=list)
    started: dict | None = None
    progress: dict = field(default_factory=dict)
    complete: dict | None = None
    error: StreamError | None = None
    ticks: int = 0

    def take(self, batch: pa.RecordBatch, metadata: dict[str, str]) -> None:
        if batch.num_rows:
            self.batches.append(batch)
            self.ticks += batch.num_rows
        for key in _EVENTS:
            if key in metadata:
                data = orjson.loads(metadata[key])
                if key == "error":
                    self.error = error_from_body(data)
                else:
                    setattr(self, key, data)

    @property
    def total_seconds(self) -> float:
        return self.progress.get("total_seconds") or (
            (self.query.end_ns - self.query.start_ns) / NS
        )

    @property
    def done_seconds(self) -> float:
        return float(self.progress.get("done_seconds") or 0.0)

    @property
    def finished(self) -> bool:
        return self.complete is not None or self.error is not None


async def fetch_history(
    server: str,
    token: str | None,
    options: ClientOptions,
    answer: HistoryAnswer,
    on_batch: Callable[[HistoryAnswer], Any] | None = None,
) -> HistoryAnswer:
    """Fill `answer` (its query's whole answer; `on_batch(answer)` after each batch); the
    server's HTTP error answer, a lost connection or a timeout as the client's typed errors."""
    query = answer.query
    # Reads wait up to IDLE_SECONDS (below); the answer's head within the request timeout.
    timeout = httpx.Timeout(options.request_timeout, connect=options.connect_timeout, read=None)
    what = f"history of {query.describe()}"
    async with http_client(server, token, options, timeout=timeout) as http:
        request = http.build_request("GET", query.path, params=query.params("arrow"))
        try:
            async with asyncio.timeout(options.connect_timeout + options.request_timeout):
                response = await http.send(request, stream=True)
        except TimeoutError:
            raise timeout_error(what, options.request_timeout) from None
        except httpx.HTTPError as exc:
            raise connection_error(f"cannot reach {server}", exc, url=server) from None
        try:
            await _read(response, answer, on_batch, what)
        finally:
            await response.aclose()
    return answer


async def _read(
    response: httpx.Response,
    answer: HistoryAnswer,
    on_batch: Callable[[HistoryAnswer], Any] | None,
    what: str,
) -> None:
    if response.status_code != 200:
        raise await error_from_response(response)
    kind = response.headers.get("content-type", "")
    if not kind.startswith(ARROW_TYPE):
        raise StreamError(
            ErrorCode.INTERNAL_ERROR, f"{what}: expected an Arrow stream, got {kind!r}"
        )
    parser = ArrowStreamParser()
    chunks = response.aiter_bytes().__aiter__()
    while not answer.finished:
        try:
            async with asyncio.timeout(IDLE_SECONDS):
                chunk = await anext(chunks, None)
        except TimeoutError:
            raise _partial(answer, timeout_error(what, IDLE_SECONDS, "IDLE_SECONDS")) from None
        except httpx.HTTPError as exc:
            raise _partial(answer, connection_error(f"{what} broke off", exc)) from None
        if chunk is None:
            break
        try:
            batches = parser.feed(chunk)
        except (ValueError, pa.ArrowException) as exc:
            raise _partial(answer, _bad_stream(what, exc)) from None
        for batch, metadata in batches:
            answer.take(batch, metadata)
            if on_batch is not None:
                on_batch(answer)
    if not answer.finished:
        reason = "the answer ended before its `complete` message"
        raise _partial(answer, connection_error(what, reason))


def _bad_stream(what: str, exc: Exception) -> StreamError:
    return StreamError(ErrorCode.INTERNAL_ERROR, f"{what}: not a readable Arrow stream ({exc})")


def _partial(answer: HistoryAnswer, error: StreamError) -> StreamError:
    """`error`, with the ticks that arrived before it as `.frame`."""
    answer.error = error
    error.frame = history_frame(answer)  # type: ignore[attr-defined]
    return error


class HistoryBar:
    """tqdm progress over the range's seconds, the ticks so far beside them. `progress`:
    None or "auto" shows it where a person watches and only once the answer takes more
    than `AUTO_DELAY` s; True at once; False never."""

    AUTO_DELAY = 1.0

    def __init__(self, progress: object, query: HistoryQuery) -> None:
        if progress is not None and progress not in (True, False, "auto"):
            raise TypeError(f"progress must be None, True, False or 'auto'; got {progress!r}")
        automatic = progress is None or progress == "auto"
        total = max(1, round((query.end_ns - query.start_ns) / NS))
        self._bar = Progress(
            "auto" if automatic else bool(progress),
            total=total,
            desc=f"history {query.contract}",
            unit=" s",
            delay=self.AUTO_DELAY if automatic else 0.0,
        )

    def show(self, answer: HistoryAnswer) -> None:
        self._bar.note(f"{answer.ticks:,} ticks")
        self._bar.show(round(answer.done_seconds))

    def close(self, answer: HistoryAnswer) -> None:
        self.show(answer)
        self._bar.close(round(answer.done_seconds))


def history_frame(answer: HistoryAnswer) -> Any:
    """The answer's ticks as the tick frame, with `attrs` contracts and history."""
    from ibstream.client.arrow_frames import columns_from_frame
    from ibstream.client.frames import empty_ticks

    if answer.ticks:
        table = pa.Table.from_batches(answer.batches).select(ARROW_TICK_SCHEMA.names)
        frame = columns_from_frame([table]).to_frame()
        if not frame.index.is_monotonic_increasing:
            frame = frame.sort_index(kind="stable")
    else:
        frame = empty_ticks()
    started, complete = answer.started or {}, answer.complete or {}
    contract = started.get("contract")
    frame.attrs["contracts"] = [dict(contract)] if contract else []
    frame.attrs["history"] = {
        "from_store": int(complete.get("from_store", 0)),
        "from_ib": int(complete.get("from_ib", 0)),
        "requests": int(complete.get("requests", answer.progress.get("requests", 0))),
        "missing": list(complete.get("missing", [])),
        "start_ns": int(started.get("start_ns", answer.query.start_ns)),
        "end_ns": int(started.get("end_ns", answer.query.end_ns)),
    }
    return frame


def settle(answer: HistoryAnswer, stacklevel: int = 3) -> Any:
    """The frame of a finished answer, after its warnings; its error if it has one."""
    if answer.error is not None:
        raise _partial(answer, answer.error)
    frame = history_frame(answer)
    missing = frame.attrs["history"]["missing"]
    if missing and not len(frame):
        error = missing_error(missing[0])
        error.frame = frame  # type: ignore[attr-defined]
        raise error
    if missing:
        parts = "; ".join(describe_missing(part) for part in missing)
        text = f"history of {answer.query.contract} is incomplete: {parts}"
        warnings.warn(text, HistoryIncompleteWarning, stacklevel=stacklevel)
    elif not len(frame):
        text = f"no {'/'.join(answer.query.tick_types)} ticks in {answer.query.describe()}"
        warnings.warn(text, HistoryEmptyWarning, stacklevel=stacklevel)
    return frame


def describe_missing(part: dict) -> str:
    """One missing part as a person reads it: what, when, why (IB's code and text)."""
    span = f"{iso_ns(int(part['start_ns']))[:19]}Z to {iso_ns(int(part['end_ns']))[:19]}Z"
    why = str(part.get("message") or part.get("code") or "not available")
    if part.get("ib_code") is not None:
        why += f" (IB {part['ib_code']}: {part.get('ib_message') or ''})".replace(": )", ")")
    return f"{part.get('tick_type', '?')} {span} missing: {why}"


def missing_error(part: dict) -> StreamError:
    """The typed error of a missing part; `details` keep the part and IB's code."""
    details = {k: v for k, v in part.items() if k not in ("code", "message")}
    return error_from_body(
        {"code": part.get("code"), "message": describe_missing(part), "details": details}
    )
