"""VPIN: volume-synchronised probability of informed trading (Easley, López de Prado &
O'Hara 2012, "Flow toxicity and liquidity in a high-frequency world", Rev. Financial
Studies 25(5)).

Each contract's trades, in arrival order, fill buckets of equal volume `bucket_volume`; a
trade that crosses a bucket's edge is split, its remainder opening the next bucket (and a
trade larger than a bucket fills several). Per completed bucket:

- `method="trades"`: buy and sell volume from the trades' classified sides (neutral volume
  fills the bucket but counts for neither side).
- `method="bvc"`: bulk volume classification of the whole bucket, buy = V * Phi(dP / sigma)
  (`bars.buy_share`): dP is the change of the bucket's close (the last trade price up to its
  end) from the previous bucket's close, sigma the standard deviation of dP over the last
  `sigma_window` buckets (this one included, at least 2). The paper splits one-minute time
  bars inside each bucket and takes sigma over the whole sample; ibstream splits at the
  bucket and takes sigma causally, so that a bucket is final the moment its last trade
  arrives (the live twin needs no bar clock and never revises a bucket).

imbalance = |buy - sell| / bucket_volume, and vpin = the mean imbalance of the last `window`
completed buckets (NaN until there are `window` of them with an imbalance). The open,
incomplete bucket is not reported.

`VpinEngine` is the incremental form: `update(trades)` returns the buckets a batch completes,
equal bit for bit, over any split, to `vpin` of all trades so far (`vpin` runs the engine
once). Every sum is taken in a fixed order over the same values (running totals continued
from carried ones; window sums term by term), which is what makes splits agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ibstream.analytics.bars import buy_share
from ibstream.analytics.frame_kinds import expect_trades
from ibstream.analytics.grouping import group_rows
from ibstream.analytics.kernels import to_time_index, trade_arrays

__all__ = ["VPIN_COLUMNS", "VPIN_METHODS", "VpinEngine", "filled_prices", "vpin"]

VPIN_METHODS = ("bvc", "trades")
VPIN_COLUMNS = {
    "contract_id": "int64",
    "bucket": "int64",
    "start": "datetime64[ns, UTC]",
    "buy_volume": "float64",
    "sell_volume": "float64",
    "close": "float64",
    "imbalance": "float64",
    "vpin": "float64",
}
MAX_BUCKETS = 10_000_000  # buckets one batch may complete (a bucket far too small)


def vpin(
    trades: pd.DataFrame,
    bucket_volume: float | Mapping[int, float],
    window: int = 50,
    method: str = "bvc",
    sigma_window: int | None = None,
) -> pd.DataFrame:
    """One row per completed bucket, in the order the buckets complete (see the module doc).

    Index `time`: the arrival time of the trade that completed the bucket; `start`: of the
    trade that opened it. `bucket` numbers a contract's buckets from 0. `bucket_volume` is
    one volume for every contract or a mapping contract_id -> volume. `sigma_window`
    (default `window`, at least 2) is for `method="bvc"` only. Trades without a size add no volume;
    without a price they add volume and leave the close to the previous priced trade.
    """
    return VpinEngine(bucket_volume, window, method, sigma_window).update(trades)


@dataclass
class _Open:
    """One contract's carried state between batches."""

    total: float = 0.0  # volume so far (a running sum continued batch to batch)
    done: int = 0  # buckets completed (the open bucket's number)
    start: int = 0  # time of the open bucket's first trade
    buy_total: float = 0.0  # buy and sell volume so far (running sums, method "trades")
    sell_total: float = 0.0
    buy_mark: float = 0.0  # buy and sell volume so far at the last bucket edge
    sell_mark: float = 0.0
    price: float = np.nan  # the last trade price
    close: float = np.nan  # the close of the last completed bucket
    changes: np.ndarray = field(default_factory=lambda: np.zeros(0))  # newest sigma_window - 1
    imbalances: np.ndarray = field(default_factory=lambda: np.zeros(0))  # newest window - 1


class VpinEngine:
    """`vpin` fed batch by batch. The state per contract is the open bucket's totals and two
    windows; `frame()` keeps the completed buckets (one row per `bucket_volume` traded)."""

    def __init__(
        self,
        bucket_volume: float | Mapping[int, float],
        window: int = 50,
        method: str = "bvc",
        sigma_window: int | None = None,
    ) -> None:
        self._volumes = _bucket_volumes(bucket_volume)
        self.window = _count(window, "window", 1)
        if method not in VPIN_METHODS:
            raise ValueError(f"method must be one of {', '.join(VPIN_METHODS)}, got {method!r}")
        self.method = method
        self.sigma_window = max(self.window, 2) if sigma_window is None else sigma_window
        self.sigma_window = _count(self.sigma_window, "sigma_window", 2)
        self._state: dict[int, _Open] = {}
        self._parts: list[pd.DataFrame] = []

    def update(self, trades: pd.DataFrame) -> pd.DataFrame:
        """The buckets this batch of classified trades completes (arrival order)."""
        expect_trades(trades, "vpin")
        a = trade_arrays(trades)
        parts, states, nan_prices = [], {}, bool(np.isnan(a.price).any())
        for rows in group_rows(a.contract, sort=False).members():
            cid = int(a.contract[rows[0]])
            state = _copy(self._state.get(cid, _Open()))
            out = self._contract(state, self._volume(cid), rows, a, nan_prices)
            parts.append(out)
            states[cid] = state
        self._state |= states  # only once every contract went through
        frame = _frame(parts)
        self._parts.append(frame)
        return frame

    def frame(self) -> pd.DataFrame:
        """Every bucket completed so far (the same frame as `vpin` of all trades fed)."""
        if len(self._parts) > 1:
            self._parts = [pd.concat(self._parts)]
        return self._parts[0] if self._parts else _frame([])

    def _volume(self, contract: int) -> float:
        if isinstance(self._volumes, float):
            return self._volumes
        if contract not in self._volumes:
            raise ValueError(f"bucket_volume has no volume for contract {contract}")
        return self._volumes[contract]

    def _contract(
        self, st: _Open, vb: float, rows: np.ndarray, a: object, nan_prices: bool
    ) -> dict:
        """One contract's rows of the batch: its completed buckets; `st` moves on.

        Bucket j ends where the running volume reaches (j + 1) vb, inside the first trade
        whose running volume gets there; the buy (sell) volume up to that point is the
        running buy (sell) volume before that trade plus its share up to the edge, so a
        bucket's volumes are differences of running totals (exact for whole sizes, else
        within float rounding of the totals, as `delta.rolling`) and no trade is split.
        """
        whole = len(rows) == len(a.time)  # one contract: its columns as they are

        def take(values: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
            """The contract's `values` (at its rows `at`), gathering no more than asked."""
            if at is None:
                return values if whole else values[rows]
            return values[at if whole else rows[at]]

        size = take(a.size)
        end = np.cumsum(np.concatenate([[st.total], size]))[1:]
        total = float(end[-1]) if len(end) else st.total
        count = _edges_below(total, vb) - st.done
        if count > MAX_BUCKETS:
            raise ValueError(
                f"bucket_volume {vb!r} is too small for these trades ({count} buckets in one "
                "batch); use a larger bucket"
            )
        j = st.done + np.arange(count)
        edge = (j + 1) * vb
        k = np.searchsorted(end, edge, "left")  # the trade that completes bucket j
        before = np.where(k > 0, end[np.maximum(k - 1, 0)], st.total)
        if self.method == "trades":
            buy, sell = self._sides(st, take(a.side), size, k, edge - before)
        opens = np.minimum(np.searchsorted(end, j * vb, "right"), max(len(end) - 1, 0))
        first = take(a.time, opens)
        if count and st.total > st.done * vb:  # the open bucket began in an earlier batch
            first[0] = st.start
        if nan_prices:  # the last price up to each trade
            prices = filled_prices(take(a.price), st.price)
            closes, last = prices[k], prices[-1:]
        else:
            closes, last = take(a.price, k), take(a.price, np.arange(len(end))[-1:])
        opened = st.total > st.done * vb
        st.done += count
        if total > st.done * vb and (count or not opened):
            st.start = int(take(a.time, np.searchsorted(end, st.done * vb, "right")))
        st.total = total
        if len(last):
            st.price = float(last[0])
        if self.method == "bvc":
            change = closes - np.concatenate([[st.close], closes[:-1]])[: len(closes)]
            sigma = _window_std(st.changes, change, self.sigma_window)
            buy = vb * buy_share(change, sigma)
            sell = vb - buy
            st.changes = _tail(st.changes, change, self.sigma_window - 1)
        if len(closes):
            st.close = float(closes[-1])
        imbalance = np.abs(buy - sell) / vb
        mean = _window_sum(st.imbalances, imbalance, self.window) / self.window
        st.imbalances = _tail(st.imbalances, imbalance, self.window - 1)
        return {
            "row": rows[k],
            "time": take(a.time, k),
            "contract_id": np.full(count, a.contract[rows[0]], dtype=np.int64),
            "bucket": j,
            "start": first,
            "buy_volume": buy,
            "sell_volume": sell,
            "close": closes,
            "imbalance": imbalance,
            "vpin": mean,
        }

    @staticmethod
    def _sides(st: _Open, side: np.ndarray, size: np.ndarray, k: np.ndarray, part: np.ndarray):
        """Buy and sell volume per completed bucket from the running totals at its edges
        (`part`: the volume of trade k up to the edge); the totals move on in `st`."""
        out = []
        for code, total, mark in ((0, "buy_total", "buy_mark"), (1, "sell_total", "sell_mark")):
            flow = np.where(side == code, size, 0.0)
            running = np.cumsum(np.concatenate([[getattr(st, total)], flow]))
            marks = running[k] + part * (side[k] == code)
            out.append(np.diff(np.concatenate([[getattr(st, mark)], marks])))
            setattr(st, total, float(running[-1]))
            if len(marks):
                setattr(st, mark, float(marks[-1]))
        return out


def _edges_below(total: float, vb: float) -> int:
    """How many bucket edges (j + 1) vb are <= total, by the same products as the edges."""
    j = int(np.floor(total / vb))
    while j > 0 and j * vb > total:
        j -= 1
    while (j + 1) * vb <= total:
        j += 1
    return j


def filled_prices(price: np.ndarray, before: float) -> np.ndarray:
    """Each row's last price that is not NaN, up to it (`before` if none in the batch)."""
    at = np.maximum.accumulate(np.where(np.isnan(price), -1, np.arange(len(price))))
    return np.where(at >= 0, price[np.maximum(at, 0)], before)


def _padded(history: np.ndarray, new: np.ndarray, width: int) -> np.ndarray:
    """NaN padding, the carried history, then the new values: row i's window of `width`
    values ending at new[i] is out[i : i + width]."""
    pad = np.full(width - 1 - len(history), np.nan)
    return np.concatenate([pad, history, new])


def _window_sum(history: np.ndarray, new: np.ndarray, width: int) -> np.ndarray:
    """Per new value, the sum of the `width` values ending at it, added oldest first (NaN
    if any is missing): the same terms in the same order whatever the batches were."""
    values, n = _padded(history, new, width), len(new)
    total = values[:n].copy()
    for d in range(1, width):
        total += values[d : d + n]
    return total


def _window_std(history: np.ndarray, new: np.ndarray, width: int) -> np.ndarray:
    """Per new value, the sample standard deviation of the values that are not NaN among
    the `width` ending at it (NaN below 2), term by term as `_window_sum`."""
    values, n = _padded(history, new, width), len(new)
    have = ~np.isnan(values)
    zeroed = np.where(have, values, 0.0)
    count, total = np.zeros(n), np.zeros(n)
    for d in range(width):
        count += have[d : d + n]
        total += zeroed[d : d + n]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        square = np.zeros(n)
        for d in range(width):
            square += np.where(have[d : d + n], (zeroed[d : d + n] - mean) ** 2, 0.0)
        return np.where(count >= 2, np.sqrt(square / (count - 1)), np.nan)


def _tail(history: np.ndarray, new: np.ndarray, keep: int) -> np.ndarray:
    return np.concatenate([history, new])[-keep:] if keep > 0 else history[:0]


def _frame(parts: list[dict]) -> pd.DataFrame:
    """The contracts' buckets as one frame, in arrival order of their completing trades."""
    keys = ("row", "time", *VPIN_COLUMNS)
    merged = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0) for k in keys}
    order = np.lexsort((merged["bucket"], merged["row"]))
    data = {
        k: pd.array(to_time_index(merged[k][order]))
        if k == "start"
        else np.asarray(merged[k][order], dtype=t)
        for k, t in VPIN_COLUMNS.items()
    }
    return pd.DataFrame(data, index=to_time_index(merged["time"][order]))


def _copy(state: _Open) -> _Open:
    return _Open(**vars(state))


def _count(value: object, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    return int(value)


def _bucket_volumes(value: object) -> float | dict[int, float]:
    """One positive volume, or a mapping contract_id -> positive volume."""
    if isinstance(value, Mapping):
        return {int(k): _positive(v, f"bucket_volume[{k!r}]") for k, v in value.items()}
    return _positive(value, "bucket_volume")


def _positive(value: object, name: str) -> float:
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive volume, got {value!r}")
    return float(value)
