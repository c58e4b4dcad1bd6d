"""Volume profile and footprint imbalances one trade at a time, in plain Python: the
definitions written as loops. `bench.orderflow_profile` times them against the vectorised
functions, and the tests hold those equal to them."""

from __future__ import annotations

import math
from decimal import Decimal

import pandas as pd

SIDE_CODES = {"buy": 0, "sell": 1, "neutral": 2}
Cells = dict[tuple[int, int, float], list]


def level_of(price: float, tick: float | None) -> float:
    """`footprint.price_levels` of one price: floored to the tick grid (numpy's rounding)."""
    if tick is None:
        return price
    places = max(0, -int(Decimal(str(tick)).normalize().as_tuple().exponent))
    steps = math.floor(round(price / tick * 1e6) / 1e6)
    scale = 10.0**places
    return round(steps * tick * scale) / scale


def rows_of(trades: pd.DataFrame) -> list[tuple]:
    """(time ns, contract, price, size, side code) per trade."""
    return list(
        zip(
            trades.index.asi8.tolist(),
            trades["contract_id"].tolist(),
            trades["price"].astype(float).tolist(),
            trades["size"].astype(float).tolist(),
            [SIDE_CODES[str(s)] for s in trades["side"].tolist()],
            strict=True,
        )
    )


def cells_loop(rows: list[tuple], step: int | None, tick: float | None) -> Cells:
    """(period start, or 0 when `step` is None; contract; level) -> [buy, sell, neutral,
    count], summed in arrival order; trades without a price left out, without a size 0."""
    cells: Cells = {}
    for t, c, p, s, side in rows:
        if p != p:
            continue
        key = (0 if step is None else t - t % step, c, level_of(p, tick))
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = [0.0, 0.0, 0.0, 0]
        cell[side] += 0.0 if s != s else s
        cell[3] += 1
    return cells


def by_period(cells: Cells) -> dict[tuple[int, int], list[tuple[float, list]]]:
    """Each (period, contract)'s levels, ascending."""
    out: dict[tuple[int, int], list[tuple[float, list]]] = {}
    for (period, contract, price), cell in sorted(cells.items()):
        out.setdefault((period, contract), []).append((price, cell))
    return out


def value_area_loop(prices: list[float], volumes: list[float], fraction: float) -> tuple:
    """(poc, low, high): the expansion from the POC, two levels at a time, step by step."""
    n, total = len(prices), 0.0
    for v in volumes:
        total += v
    if not n or total <= 0:
        return (math.nan, math.nan, math.nan)
    most, middle = max(volumes), (prices[0] + prices[-1]) / 2
    poc = min(
        (abs(p - middle), p, i)
        for i, (p, v) in enumerate(zip(prices, volumes, strict=True))
        if v == most
    )
    lo = hi = poc[2]
    taken, target = volumes[lo], fraction * total
    while taken < target and (lo > 0 or hi < n - 1):
        up = volumes[hi + 1] + (volumes[hi + 2] if hi + 2 < n else 0.0) if hi + 1 < n else None
        down = volumes[lo - 1] + (volumes[lo - 2] if lo >= 2 else 0.0) if lo >= 1 else None
        if down is None or (up is not None and up >= down):
            taken, hi = taken + up, min(hi + 2, n - 1)
        else:
            taken, lo = taken + down, max(lo - 2, 0)
    return (prices[poc[2]], prices[lo], prices[hi])


def profile_loop(rows: list[tuple], step: int | None, tick: float | None, fraction: float):
    """Per (period, contract): (poc, value area low, high, volume)."""
    out = {}
    for key, levels in by_period(cells_loop(rows, step, tick)).items():
        volumes = [c[0] + c[1] + c[2] for _, c in levels]
        total = 0.0
        for v in volumes:
            total += v
        out[key] = (*value_area_loop([p for p, _ in levels], volumes, fraction), total)
    return out


def footprint_loop(
    rows: list[tuple], step: int, tick: float | None, ratio: float, min_volume: float, stacked: int
) -> dict[tuple[int, int, float], tuple]:
    """Per cell: (buy, sell, buy_imbalance, sell_imbalance, stacked_buy, stacked_sell,
    unfinished_high, unfinished_low)."""
    out = {}
    for (bar, contract), levels in by_period(cells_loop(rows, step, tick)).items():
        n = len(levels)
        price = [p for p, _ in levels]
        buy, sell = [c[0] for _, c in levels], [c[1] for _, c in levels]

        def next_to(i: int, price: list[float] = price) -> bool:
            return _next_to(price, i, tick)

        buys, sells = [], []
        for i in range(n):
            below = sell[i - 1] if next_to(i) else 0.0
            above = buy[i + 1] if i + 1 < n and next_to(i + 1) else 0.0
            buys.append(i > 0 and buy[i] > 0 and buy[i] >= min_volume and buy[i] >= ratio * below)
            sells.append(
                i < n - 1 and sell[i] > 0 and sell[i] >= min_volume and sell[i] >= ratio * above
            )
        high = buy[-1] > 0 and sell[-1] > 0
        low = buy[0] > 0 and sell[0] > 0
        stacks = [_stacked(flags, next_to, stacked) for flags in (buys, sells)]
        for i in range(n):
            flags = (buys[i], sells[i], stacks[0][i], stacks[1][i], high, low)
            out[(bar, contract, price[i])] = (buy[i], sell[i], *flags)
    return out


def _next_to(price: list[float], i: int, tick: float | None) -> bool:
    """Level i - 1 is one tick below level i (with no grid: any level below)."""
    return i > 0 and (tick is None or round(price[i] / tick) - round(price[i - 1] / tick) == 1)


def _stacked(flags: list[bool], next_to, length: int) -> list[bool]:
    out, i = [False] * len(flags), 0
    while i < len(flags):
        j = i + 1
        while flags[i] and j < len(flags) and flags[j] and next_to(j):
            j += 1
        if flags[i] and j - i >= length:
            out[i:j] = [True] * (j - i)
        i = j
    return out


def as_cells(frame: pd.DataFrame, columns: list[str]) -> dict:
    """A footprint-like frame as {(time ns, contract, price): values}."""
    keys = zip(
        frame.index.asi8.tolist(),
        frame["contract_id"].tolist(),
        frame["price"].tolist(),
        strict=True,
    )
    values = zip(*(frame[c].to_numpy().tolist() for c in columns), strict=True)
    return {k: tuple(v) for k, v in zip(keys, values, strict=True)}
