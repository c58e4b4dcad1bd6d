"""Time bars of classified trades, with the bar's delta path, and bulk volume classification.

A bar is left-closed [start, start + interval), labelled by its UTC start, epoch-aligned
(as `DatetimeIndex.floor`), one per contract. Bars without trades are omitted: a quiet
minute has no price to draw, and an engine fed live would not know it yet either.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ibstream.analytics.grouping import (
    Groups,
    goes_back,
    group_rows,
    grouped_cumsum,
    previous_in_group,
    running_sums,
)
from ibstream.analytics.kernels import (
    TradeArrays,
    require_columns,
    to_nanos,
    to_time_index,
    trade_arrays,
    typed_frame,
)

__all__ = ["BAR_COLUMNS", "bars", "bulk_volume", "normal_cdf"]

BAR_COLUMNS = {
    "contract_id": "int64",
    "open": "float64",
    "high": "float64",
    "low": "float64",
    "close": "float64",
    "volume": "float64",
    "buy_volume": "float64",
    "sell_volume": "float64",
    "neutral_volume": "float64",
    "delta": "float64",
    "delta_high": "float64",
    "delta_low": "float64",
    "delta_close": "float64",
    "vwap": "float64",
    "trade_count": "int64",
    "cumulative_delta": "float64",
}
_SUMS = ("volume", "buy_volume", "sell_volume", "neutral_volume", "pv", "priced_volume")
BarState = dict[str, np.ndarray]


def bars(trades: pd.DataFrame, interval: object = "1min") -> pd.DataFrame:
    """OHLC, volume by side and delta per bar and contract, sorted by time then contract.

    delta = buy_volume - sell_volume. delta_high / delta_low / delta_close are the extremes
    and close of the bar's running delta, which opens at 0 (so delta_high >= 0 >= delta_low,
    as a delta candle). vwap = sum(price * size) / sum(size) over the trades with a price
    (NaN if that volume is 0). A trade without a price (NaN) counts in the volumes and
    trade_count but not in open, high, low, close or vwap; a bar of such trades only has
    NaN prices. A trade without a size has volume 0.
    cumulative_delta is the contract's `delta.cumulative_delta` (running signed volume since
    the frame's first trade) at the bar's last trade. Sums run in arrival order, as there.
    """
    step = to_nanos(interval, "interval")
    a = trade_arrays(trades)
    cum_delta = grouped_cumsum(a.signed(), a.contract)
    return finish_bars(merge_bars(bar_rows(a, step, cum_delta)))


def bar_rows(a: TradeArrays, step: int, cum_delta: np.ndarray) -> BarState:
    """Each trade as a bar of its own, in the state layout `merge_bars` combines."""
    flows, unpriced = a.flows(), np.isnan(a.price)
    return {
        "time": a.time - a.time % step,
        "contract_id": a.contract,
        "open": a.price,
        "high": a.price,
        "low": a.price,
        "close": a.price,
        "volume": a.size,
        "buy_volume": flows[:, 0],
        "sell_volume": flows[:, 1],
        "neutral_volume": flows[:, 2],
        "pv": np.where(unpriced, 0.0, a.price * a.size),
        "priced_volume": np.where(unpriced, 0.0, a.size),
        "delta_high": np.full(len(a.price), -np.inf),
        "delta_low": np.full(len(a.price), np.inf),
        "trade_count": np.ones(len(a.price), dtype=np.int64),
        "cumulative_delta": cum_delta,
    }


def merge_bars(rows: BarState) -> BarState:
    """Combine rows (trades, or bars carried over, earlier rows first) into one row per
    (time, contract). A carried bar continues its sums and delta path exactly."""
    g = group_rows(rows["time"], rows["contract_id"])
    sums = running_sums(np.column_stack([rows[k] for k in _SUMS]), g)
    path = sums[:, 1] - sums[:, 2]
    last = g.last
    out = {"time": g.keys[0], "contract_id": g.keys[1]}
    out["open"] = _priced_end(g, rows["open"], last=False)
    out["high"] = g.reduce(np.fmax, rows["high"])  # fmax / fmin: NaN (no price) is skipped
    out["low"] = g.reduce(np.fmin, rows["low"])
    out["close"] = _priced_end(g, rows["close"], last=True)
    out |= {k: sums[last, i] for i, k in enumerate(_SUMS)}
    out["delta_high"] = np.maximum(g.reduce(np.maximum, np.maximum(path, rows["delta_high"])), 0)
    out["delta_low"] = np.minimum(g.reduce(np.minimum, np.minimum(path, rows["delta_low"])), 0)
    out["trade_count"] = g.reduce(np.add, rows["trade_count"])
    out["cumulative_delta"] = rows["cumulative_delta"][last]
    return out


def finish_bars(state: BarState) -> pd.DataFrame:
    """Bar states -> the bars frame (index `time`, the bar start in UTC)."""
    delta = state["buy_volume"] - state["sell_volume"]
    with np.errstate(divide="ignore", invalid="ignore"):
        vwap = state["pv"] / state["priced_volume"]
    columns = dict(state) | {"delta": delta, "delta_close": delta, "vwap": vwap}
    return typed_frame(columns, BAR_COLUMNS, to_time_index(state["time"]))


def _priced_end(g: Groups, price: np.ndarray, last: bool) -> np.ndarray:
    """Per group, the first (or `last`) price that is not NaN; NaN if there is none."""
    if not len(price) or not np.isnan(price).any():
        return price[g.last if last else g.first]
    ordered = price[g.order]
    at = np.arange(len(ordered))
    missing = np.isnan(ordered)
    if last:
        pick = np.maximum.reduceat(np.where(missing, -1, at), g.starts)
    else:
        pick = np.minimum.reduceat(np.where(missing, len(at), at), g.starts)
    found = (pick >= 0) & (pick < len(at))
    return np.where(found, ordered[np.clip(pick, 0, len(at) - 1)], np.nan)


def concat_states(*states: BarState) -> BarState:
    """Row-wise concatenation of states with the same keys."""
    return {k: np.concatenate([s[k] for s in states]) for k in states[0]}


def take(state: BarState, rows: np.ndarray) -> BarState:
    return {k: v[rows] for k, v in state.items()}


def bulk_volume(bars: pd.DataFrame, window: int = 20) -> pd.DataFrame:
    """Bulk volume classification (Easley, López de Prado & O'Hara 2012) of `bars`.

    Each bar's volume is split by buy fraction Phi(dP / sigma): dP is the close-to-close
    change from the contract's previous bar (omitted empty bars are skipped), sigma the
    standard deviation of dP over the last `window` bars (this one included, at least 2),
    Phi the standard normal CDF. The first bar of a contract, and any bar before sigma
    exists, gets NaN. A zero sigma splits 50/50 when dP is 0, else all to dP's side.
    Adds bvc_buy_volume, bvc_sell_volume, bvc_delta; rows must be in time order per contract.
    """
    require_columns(bars, ("contract_id", "close", "volume"), "bars")
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 2:
        raise ValueError(f"window must be a number of bars >= 2, got {window!r}")
    contract = bars["contract_id"].to_numpy(dtype=np.int64)
    close = bars["close"].to_numpy(dtype=np.float64)
    g = group_rows(contract)
    if goes_back(bars.index.asi8, g).any():
        raise ValueError("bulk_volume needs bars in time order within each contract")
    change = close - previous_in_group(close, g, np.nan)
    series = pd.Series(change)
    sigma = (
        series.groupby(contract, sort=False)
        .rolling(int(window), min_periods=2)
        .std()
        .reset_index(level=0, drop=True)
        .sort_index()
        .to_numpy()
    )
    buy = bars["volume"].to_numpy(dtype=np.float64) * buy_share(change, sigma)
    sell = bars["volume"].to_numpy(dtype=np.float64) - buy
    return bars.assign(bvc_buy_volume=buy, bvc_sell_volume=sell, bvc_delta=buy - sell)


def buy_share(change: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """The BVC buy fraction Phi(change / sigma): NaN where sigma is NaN; a zero sigma gives
    1/2 for no change, else all to the change's side (shared by `bulk_volume` and `vpin`)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sigma > 0, change / sigma, np.where(change == 0, 0.0, change * np.inf))
    z[np.isnan(sigma)] = np.nan
    return normal_cdf(z)


def normal_cdf(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF, as Cephes' `ndtr` (Moshier's rational approximations of erf and
    erfc; relative error near 1e-15, tails included). NaN stays NaN, +-inf give 1 and 0."""
    z = np.asarray(z, dtype=np.float64)
    x = z * _SQRT_HALF
    ax = np.abs(x)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        body = 0.5 + 0.5 * _erf(x)
        wing = np.exp(-ax * ax) * np.where(
            ax < 8.0,
            _poly(ax, _ERFC_P) / _poly(ax, _ERFC_Q, monic=True),
            _poly(ax, _ERFC_R) / _poly(ax, _ERFC_S, monic=True),
        )
        wing = 0.5 * np.where(ax < 1.0, 1.0 - _erf(ax), wing)
        wing = np.where(np.isinf(ax), 0.0, wing)  # = Phi(-|z|)
        return np.where(ax < _SQRT_HALF, body, np.where(x > 0, 1.0 - wing, wing))


def _erf(x: np.ndarray) -> np.ndarray:
    """erf for |x| < 1 (Cephes: x T(x^2) / U(x^2))."""
    return x * _poly(x * x, _ERF_T) / _poly(x * x, _ERF_U, monic=True)


def _poly(x: np.ndarray, coeffs: tuple[float, ...], monic: bool = False) -> np.ndarray:
    """Horner's rule, highest power first (`monic`: a leading 1 not listed)."""
    out = np.ones_like(x) if monic else np.full_like(x, coeffs[0])
    for c in coeffs if monic else coeffs[1:]:
        out = out * x + c
    return out


_SQRT_HALF = 0.7071067811865476
# Cephes Math Library 2.9 (ndtr.c), S. L. Moshier
_ERF_T = (
    9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
    7.00332514112805075473e3, 5.55923013010394962768e4,
)  # fmt: skip
_ERF_U = (
    3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
    2.26290000613890934246e4, 4.92673942608635921086e4,
)  # fmt: skip
_ERFC_P = (
    2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
    4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
    9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2,
)  # fmt: skip
_ERFC_Q = (
    1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
    9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
    1.65666309194161350182e3, 5.57535340817727675546e2,
)  # fmt: skip
_ERFC_R = (
    5.64189583547755073984e-1, 1.27536670759978104416e0, 5.01905042251180477414e0,
    6.16021097993053585195e0, 7.40974269950448939160e0, 2.97886665372100240670e0,
)  # fmt: skip
_ERFC_S = (
    2.26052863220117276590e0, 9.39603524938001434673e0, 1.20489539808096656605e1,
    1.70814450747565897222e1, 9.60896809063285878198e0, 3.36907645100081516050e0,
)  # fmt: skip
