"""Delta divergence: price makes a new high (low) and cumulative delta does not follow.

For each bar of a contract (in time order) with `lookback` earlier bars: "bearish" when
its high is above the highest high of those bars while its delta column (by default
`cumulative_delta`, the running delta at the bar's close) is not above the highest value of
it over the same bars: buyers did not push the new high. "bullish" is the mirror at a new
low. Bars without a price (NaN high / low) are skipped in the maxima and never flagged.

`DivergenceEngine` is the incremental form: feed it closed bars (the open bar still
changes) and `update` returns the flags among them, equal to `delta_divergence` of all bars
fed, for any split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ibstream.analytics.frame_kinds import expect_bars
from ibstream.analytics.kernels import require_columns, to_time_index, utc_nanos

__all__ = ["DIVERGENCE_COLUMNS", "DivergenceEngine", "delta_divergence"]

KINDS = pd.CategoricalDtype(["bearish", "bullish"])
DIVERGENCE_COLUMNS = {
    "contract_id": "int64",
    "kind": KINDS,
    "high": "float64",
    "low": "float64",
    "close": "float64",
    "delta": "float64",
    "prior_high": "float64",
    "prior_low": "float64",
    "prior_delta_high": "float64",
    "prior_delta_low": "float64",
}
_READ = ("high", "low", "close", "delta")


def delta_divergence(
    bars: pd.DataFrame, lookback: int = 20, delta: str = "cumulative_delta"
) -> pd.DataFrame:
    """The flagged bars (see the module doc), in the bars' order, bearish before bullish;
    index `time` = the bar's start, `delta` = the bar's value of the `delta` column,
    prior_* = the extremes of the `lookback` bars before it."""
    return DivergenceEngine(lookback, delta).update(bars)


class DivergenceEngine:
    """`delta_divergence` fed closed bars batch by batch; keeps `lookback` bars a contract."""

    def __init__(self, lookback: int = 20, delta: str = "cumulative_delta") -> None:
        if isinstance(lookback, bool) or not isinstance(lookback, int) or lookback < 1:
            raise ValueError(f"lookback must be an int >= 1, got {lookback!r}")
        if not isinstance(delta, str):
            raise ValueError(f"delta must be a column name, got {delta!r}")
        self.lookback, self.delta = lookback, delta
        self._history: dict[int, dict[str, np.ndarray]] = {}

    def update(self, bars: pd.DataFrame) -> pd.DataFrame:
        """The flags among these bars (earlier bars of each contract come from before)."""
        expect_bars(bars, "delta_divergence")
        require_columns(bars, ("contract_id", "high", "low", "close", self.delta), "bars")
        time = utc_nanos(bars.index)
        contract = bars["contract_id"].to_numpy(dtype=np.int64)
        values = {k: bars[k].to_numpy(dtype=np.float64, na_value=np.nan) for k in _READ[:3]}
        values["delta"] = bars[self.delta].to_numpy(dtype=np.float64, na_value=np.nan)
        values["time"] = time
        history, parts = dict(self._history), []
        for cid in pd.unique(contract):
            rows = np.flatnonzero(contract == cid)
            old = history.get(int(cid))
            mine = {k: v[rows] for k, v in values.items()}
            joined = {k: np.concatenate([old[k], v]) for k, v in mine.items()} if old else mine
            if (np.diff(joined["time"]) < 0).any():
                raise ValueError(
                    f"delta_divergence needs bars in time order within a contract; contract "
                    f"{cid} goes back in time"
                )
            parts.append(self._flags(joined, len(joined["time"]) - len(rows), rows, int(cid)))
            history[int(cid)] = {k: v[-self.lookback :] for k, v in joined.items()}
        self._history = history
        return _frame(parts)

    def _flags(self, v: dict, skip: int, rows: np.ndarray, cid: int) -> list[dict]:
        """Flags of the bars after the first `skip` (the carried history)."""
        n, w = len(v["time"]), self.lookback
        prior = {
            "prior_high": _prior(v["high"], w, np.fmax),
            "prior_low": _prior(v["low"], w, np.fmin),
            "prior_delta_high": _prior(v["delta"], w, np.fmax),
            "prior_delta_low": _prior(v["delta"], w, np.fmin),
        }
        new = np.arange(n) >= skip
        with np.errstate(invalid="ignore"):
            kinds = {
                "bearish": (v["high"] > prior["prior_high"])
                & ~(v["delta"] > prior["prior_delta_high"]),
                "bullish": (v["low"] < prior["prior_low"])
                & ~(v["delta"] < prior["prior_delta_low"]),
            }
        out = []
        for code, (kind, flag) in enumerate(kinds.items()):
            hit = np.flatnonzero(flag & new)
            row = {k: v[k][hit] for k in ("time", *_READ)} | {k: p[hit] for k, p in prior.items()}
            row |= {"row": rows[hit - skip], "code": np.full(len(hit), code), "kind": kind}
            out.append(row | {"contract_id": np.full(len(hit), cid, dtype=np.int64)})
        return out


def _prior(values: np.ndarray, width: int, pick: np.ufunc) -> np.ndarray:
    """Per row, `pick` (fmax / fmin) over the `width` rows before it; NaN with fewer."""
    n = len(values)
    out = np.full(n, np.nan)
    if n <= width:
        return out
    acc = values[: n - width].copy()
    for d in range(1, width):
        acc = pick(acc, values[d : n - width + d])
    out[width:] = acc
    return out


def _frame(parts: list[list[dict]]) -> pd.DataFrame:
    rows = [r for p in parts for r in p]
    keys = ("time", "row", "code", *(k for k in DIVERGENCE_COLUMNS if k != "kind"))
    merged = {k: np.concatenate([r[k] for r in rows]) if rows else np.zeros(0) for k in keys}
    order = np.lexsort((merged["code"], merged["row"]))
    data = {
        k: np.asarray(merged[k][order], dtype=t)
        for k, t in DIVERGENCE_COLUMNS.items()
        if k != "kind"
    }
    codes = np.asarray(merged["code"][order], dtype=np.int64)
    data["kind"] = pd.Categorical.from_codes(codes, dtype=KINDS)
    frame = pd.DataFrame(data, index=to_time_index(merged["time"][order]))
    return frame[list(DIVERGENCE_COLUMNS)]
