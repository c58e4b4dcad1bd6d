"""The arguments of `history(contract, tick_types, start, end)`, checked before any request.

Times may be ISO-8601 text (UTC unless an offset is given), datetimes and pandas Timestamps
(naive: UTC), or epoch numbers (below 10**11: seconds; from 10**15: nanoseconds; as the
server reads them). `start` may also
be a duration ("30min", a timedelta): that long before `end`. Everything becomes epoch
nanoseconds here, so the request is unambiguous and each mistake is reported with the
argument's name: a start after its end, a start in the future, a duration that is not one.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse
from dataclasses import dataclass
from numbers import Real

from ibstream.client.subscription import DEFAULT_TICK_TYPES, parse_tick_types
from ibstream.protocol.times import epoch_ns, iso_ns, parse_time_ns

NS = 1_000_000_000
_EXAMPLES = "an ISO-8601 time ('2026-12-07T14:30Z'), a datetime or epoch seconds / ns"


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """One history request: the contract as asked, wire tick type names, [start, end) ns."""

    contract: str
    tick_types: tuple[str, ...]
    start_ns: int
    end_ns: int

    @property
    def path(self) -> str:
        return "/v2/history/" + urllib.parse.quote(self.contract, safe="")

    def params(self, format: str = "arrow") -> dict[str, str]:
        params = {
            "tick_types": ",".join(self.tick_types),
            "start": str(self.start_ns),
            "end": str(self.end_ns),
            "format": format,
        }
        if format == "arrow":  # a fifth of the bytes; pyarrow reads it as it is
            params["compression"] = "lz4"
        return params

    def describe(self) -> str:
        return f"{self.contract} {iso_ns(self.start_ns)[:19]}Z to {iso_ns(self.end_ns)[:19]}Z"


def check_query(
    contract: object,
    tick_types: object = DEFAULT_TICK_TYPES,
    start: object = None,
    end: object = None,
    now_ns: int | None = None,
) -> HistoryQuery:
    """The request the arguments describe; TypeError / ValueError naming the bad one."""
    from ibstream.client.arguments import tick_types as tick_type_list
    from ibstream.client.contracts import check_symbol

    spec = check_symbol(contract, "contract")
    types = tuple(dict.fromkeys(parse_tick_types(tick_type_list(tick_types))))
    now = time.time_ns() if now_ns is None else now_ns
    end_ns = now if end is None else min(point("end", end), now)  # the server clamps too
    if start is None:
        raise ValueError(
            "start is required: a time, or a duration before end such as '30min' or '2h'"
        )
    span = duration("start", start)
    start_ns = end_ns - span if span is not None else point("start", start)
    if start_ns > now:
        raise ValueError(f"start {iso_ns(start_ns)} is in the future (now is {iso_ns(now)})")
    if start_ns >= end_ns:
        raise ValueError(f"start {iso_ns(start_ns)} is not before end {iso_ns(end_ns)}")
    return HistoryQuery(spec, types, start_ns, end_ns)


def point(name: str, value: object) -> int:
    """A point in time as epoch nanoseconds."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {_EXAMPLES}; got {value!r} (bool)")
    if isinstance(value, dt.datetime):  # pandas Timestamps too
        moment = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        nanos = getattr(value, "nanosecond", 0)
        return int(moment.timestamp()) * NS + moment.microsecond * 1000 + nanos
    if isinstance(value, dt.date):
        return point(name, dt.datetime(value.year, value.month, value.day))
    if isinstance(value, Real):
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"{name} must be {_EXAMPLES}; got {value!r}")
        try:
            return epoch_ns(value, whole_ns=False)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"{name} {exc}") from None
    if hasattr(value, "dtype") and str(getattr(value, "dtype", "")).startswith("datetime64"):
        return int(value.astype("datetime64[ns]").astype("int64"))  # type: ignore[attr-defined]
    if not isinstance(value, str):
        raise TypeError(f"{name} must be {_EXAMPLES}; got {value!r} ({type(value).__name__})")
    text = value.strip()
    if text.isdigit():
        return point(name, int(text))
    try:
        return parse_time_ns(text)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def duration(name: str, value: object) -> int | None:
    """A positive duration in ns if `value` is one ('30min', a timedelta), else None."""
    import pandas as pd

    if isinstance(value, dt.timedelta | pd.Timedelta):
        nanos = int(pd.Timedelta(value).value)
    elif isinstance(value, str) and value.strip() and not _looks_like_time(value.strip()):
        try:
            nanos = int(pd.Timedelta(value.strip()).value)
        except ValueError:
            raise ValueError(
                f"{name} must be a time ({_EXAMPLES}) or a duration such as '30min'; got {value!r}"
            ) from None
    else:
        return None
    if nanos <= 0:
        raise ValueError(f"{name} as a duration must be positive; got {value!r}")
    return nanos


def _looks_like_time(text: str) -> bool:
    """ISO dates begin with a four-digit year; epoch numbers are all digits."""
    return text.isdigit() or (len(text) >= 8 and text[:4].isdigit() and text[4] == "-")
