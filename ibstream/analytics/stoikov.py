"""Stoikov's micro-price (S. Stoikov 2018, "The micro-price: a high-frequency estimator of
future prices", Quantitative Finance 18(12)): the mid plus G*(I, S), the expected mid a
long time ahead given the imbalance bucket and spread now, estimated from consecutive quotes.

The bounded form fitted here, per contract:

- state x = (S, I): S the spread in ticks, 1 .. `n_spread` (other spreads are left out),
  I = bid_size / (bid_size + ask_size) in `n_imbalance` equal buckets of [0, 1] (odd by
  default, so equal sizes sit in a middle bucket, whose adjustment is then 0).
- each pair of consecutive quotes (both in the state space) is one transition; the mid's
  change dM, rounded to half ticks, must be within one tick (K = -1, -1/2, 1/2, 1), as in
  the paper. Every transition is added mirrored too (I -> 1 - I, dM -> -dM), the paper's
  symmetrisation.
- Q[x, y] = P(dM = 0, next state y | x), T[x, y] = P(dM != 0, next y | x), R[x, k] =
  P(dM = K[k] | x); G1 = (1 - Q)^-1 R K, B = (1 - Q)^-1 T, G* = G1 + B G1 + B^2 G1 + ...,
  cut after `iterations` terms (or once a term is below 1e-12 ticks).

Where it is not well defined it is NaN: a state never left in the data, a contract whose
1 - Q is singular (states that never move the mid), or a sum that has not converged
(its last term above 1e-8 ticks). The tick size: `tick_size`, else the contract's `min_tick`
from `quotes.attrs["contracts"]`, else its smallest positive spread (the paper's choice).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["STOIKOV_COLUMNS", "lookup", "stoikov_table"]

STOIKOV_COLUMNS = {
    "contract_id": "int64",
    "spread": "int64",  # ticks
    "bucket": "int64",
    "imbalance_low": "float64",  # bucket edges of bid_size / (bid_size + ask_size)
    "imbalance_high": "float64",
    "tick_size": "float64",
    "observations": "int64",  # transitions out of the state (before mirroring)
    "adjustment_ticks": "float64",
    "adjustment": "float64",  # G*, in price units: microprice = mid + adjustment
}
K = np.array([-1.0, -0.5, 0.5, 1.0])  # mid changes in ticks the chain allows
_SMALL, _CONVERGED = 1e-12, 1e-8


def stoikov_table(
    quotes: pd.DataFrame,
    n_imbalance: int = 11,
    n_spread: int = 2,
    tick_size: float | None = None,
    iterations: int = 200,
) -> pd.DataFrame:
    """G* per contract, spread and imbalance bucket (see the module doc), one row per state."""
    from ibstream.analytics.footprint import contract_ticks
    from ibstream.analytics.microprice import quote_book

    for name, value, least in (("n_imbalance", n_imbalance, 2), ("n_spread", n_spread, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
    if tick_size is not None and not (isinstance(tick_size, int | float) and tick_size > 0):
        raise ValueError(f"tick_size must be a positive number or None, got {tick_size!r}")
    book = quote_book(quotes, "stoikov_table")
    ticks = contract_ticks(book["attrs"], book["contract_id"])
    parts = []
    for cid in pd.unique(book["contract_id"]):
        rows = np.flatnonzero(book["contract_id"] == cid)
        tick = tick_size or _tick_of(ticks, rows, book)
        parts.append(_fit(book, rows, int(cid), tick, n_imbalance, n_spread, iterations))
    table = pd.DataFrame(
        {k: np.concatenate([p[k] for p in parts]) if parts else [] for k in STOIKOV_COLUMNS}
    ).astype(STOIKOV_COLUMNS)
    table.attrs["n_imbalance"], table.attrs["n_spread"] = n_imbalance, n_spread
    return table


def lookup(table: pd.DataFrame, book: dict) -> np.ndarray:
    """Each quote's adjustment G* (price units) from `table`; NaN outside its states."""
    n = int(table.attrs.get("n_imbalance", table["bucket"].max() + 1 if len(table) else 1))
    ticks = dict(zip(table["contract_id"], table["tick_size"], strict=False))
    tick = np.array([ticks.get(int(c), np.nan) for c in book["contract_id"]])
    spread, bucket = _state(book, np.arange(len(tick)), tick, n)
    keys = pd.MultiIndex.from_frame(table[["contract_id", "spread", "bucket"]])
    where = keys.get_indexer(pd.MultiIndex.from_arrays([book["contract_id"], spread, bucket]))
    values = table["adjustment"].to_numpy(dtype=np.float64)
    return np.where(where >= 0, values[np.maximum(where, 0)] if len(values) else np.nan, np.nan)


def _state(book: dict, rows: np.ndarray, tick: np.ndarray | float, n: int) -> tuple:
    """Spread in ticks and imbalance bucket of `rows` (-1 where there is none)."""
    bid, ask = book["bid_price"][rows], book["ask_price"][rows]
    bid_size, ask_size = book["bid_size"][rows], book["ask_size"][rows]
    with np.errstate(divide="ignore", invalid="ignore"):
        ticks = np.round((ask - bid) / tick)
        share = bid_size / (bid_size + ask_size)
        bucket = np.minimum(np.floor(share * n), n - 1)
    spread = np.where(np.isfinite(ticks), ticks, -1).astype(np.int64)
    bucket = np.where(np.isfinite(bucket) & (bucket >= 0), bucket, -1).astype(np.int64)
    return spread, bucket


def _tick_of(ticks: object, rows: np.ndarray, book: dict) -> float:
    if isinstance(ticks, float):
        return ticks
    if isinstance(ticks, np.ndarray) and np.isfinite(ticks[rows[0]]):
        return float(ticks[rows[0]])
    spread = book["ask_price"][rows] - book["bid_price"][rows]
    spread = spread[spread > 0]
    return float(f"{spread.min():.6g}") if len(spread) else np.nan  # 0.0099999 -> 0.01


def _fit(book: dict, rows: np.ndarray, cid: int, tick: float, n: int, m: int, iters: int) -> dict:
    """One contract's table rows."""
    states = n * m
    spread, bucket = _state(book, rows, tick, n)
    inside = (spread >= 1) & (spread <= m) & (bucket >= 0)
    x = np.where(inside, (spread - 1) * n + bucket, -1)
    mid = (book["bid_price"][rows] + book["ask_price"][rows]) / 2 / tick
    with np.errstate(invalid="ignore"):
        dm = np.round((mid[1:] - mid[:-1]) * 2) / 2
        ok = (x[:-1] >= 0) & (x[1:] >= 0) & (np.abs(dm) <= 1)
    start, end, dm = x[:-1][ok], x[1:][ok], dm[ok]

    def mirror(s: np.ndarray) -> np.ndarray:
        return s - s % n + (n - 1 - s % n)

    start, end = np.concatenate([start, mirror(start)]), np.concatenate([end, mirror(end)])
    dm = np.concatenate([dm, -dm])
    move = dm != 0
    q = np.bincount(start[~move] * states + end[~move], minlength=states**2)
    t = np.bincount(start[move] * states + end[move], minlength=states**2)
    r = np.bincount(start[move] * 4 + np.searchsorted(K, dm[move]), minlength=states * 4)
    q, t, r = (c.reshape(states, -1).astype(np.float64) for c in (q, t, r))
    total = q.sum(axis=1) + r.sum(axis=1)
    seen = total > 0
    scale = np.where(seen, 1.0 / np.where(seen, total, 1.0), 0.0)[:, None]
    g = _series(q * scale, t * scale, r * scale, iters)
    g = np.where(seen, g, np.nan)
    spreads, buckets = np.divmod(np.arange(states), n)
    return {
        "contract_id": np.full(states, cid, dtype=np.int64),
        "spread": spreads + 1,
        "bucket": buckets,
        "imbalance_low": buckets / n,
        "imbalance_high": (buckets + 1) / n,
        "tick_size": np.full(states, tick),
        "observations": np.bincount(x[:-1][ok], minlength=states),
        "adjustment_ticks": g,
        "adjustment": g * tick,
    }


def _series(q: np.ndarray, t: np.ndarray, r: np.ndarray, iterations: int) -> np.ndarray:
    """G* = sum of B^i G1 (NaN everywhere if 1 - Q is singular or the sum does not settle)."""
    a = np.eye(len(q)) - q
    try:
        g1, b = np.linalg.solve(a, r @ K), np.linalg.solve(a, t)
    except np.linalg.LinAlgError:
        return np.full(len(q), np.nan)
    term, total = g1, g1.copy()
    for _ in range(iterations - 1):
        term = b @ term
        total += term
        if np.max(np.abs(term), initial=0.0) < _SMALL:
            break
    if not np.all(np.isfinite(total)) or np.max(np.abs(term), initial=0.0) > _CONVERGED:
        return np.full(len(q), np.nan)
    return total
