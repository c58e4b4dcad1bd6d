"""UTC time indexes over int64 nanoseconds, both ways, without copying the nanoseconds.

Every tick and trades frame is indexed by UTC receive time in ns. Building one with
`DatetimeIndex(values, dtype=utc)` or `tz_localize("UTC")` copies (and, for fresh memory,
page-faults) every stamp, and reading one back with `tz_convert` / `as_unit` copies again:
on a day of ticks that is tens of milliseconds each way for nothing. Here an index over
nanoseconds that are already UTC wraps them as they are (pandas' own array constructor for
values it has checked; the public, copying path where that is missing), and an index that
is already UTC in ns hands its nanoseconds back as they are.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

UTC_NS = pd.DatetimeTZDtype("ns", "UTC")
_wrap = getattr(pd.arrays.DatetimeArray, "_simple_new", None)


def utc_index(nanos: np.ndarray, name: str | None = "time") -> pd.DatetimeIndex:
    """A UTC DatetimeIndex over int64 epoch nanoseconds (taken over, not copied: the caller
    must own them; NaT is int64's minimum)."""
    values = np.asarray(nanos, dtype=np.int64).view("M8[ns]")
    if _wrap is not None:
        try:
            return pd.DatetimeIndex(_wrap(values, dtype=UTC_NS), name=name, copy=False)
        except (TypeError, ValueError):  # a pandas whose private constructor changed
            pass
    return pd.DatetimeIndex(values, dtype=UTC_NS, name=name)


def utc_nanos(index: pd.DatetimeIndex) -> np.ndarray:
    """Nanoseconds since the epoch (UTC; a naive index is read as UTC); no copy when the
    index is UTC in ns already."""
    if index.dtype == UTC_NS:
        return index.asi8
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return index.as_unit("ns").asi8
