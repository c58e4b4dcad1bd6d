"""Incremental volume profile and footprint: fed trades in batches, equal to the batch
functions on all the trades fed, for any split.

Each keeps one row per (period or bar, contract, level): its running sums continue left to
right (`grouping.running_sums`), so the sums are bit for bit those of one pass; the POC,
value area, naked POCs and imbalances are derived from those rows when read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ibstream.analytics.bars import concat_states
from ibstream.analytics.footprint import (
    LevelState,
    contract_ticks,
    finish_levels,
    level_rows,
    merge_levels,
    price_levels,
)
from ibstream.analytics.imbalance import (
    DEFAULT_MIN_VOLUME,
    DEFAULT_RATIO,
    DEFAULT_STACKED,
    check_imbalance_args,
)
from ibstream.analytics.kernels import NO_TRADES, to_nanos, trade_arrays
from ibstream.analytics.profile import (
    VolumeProfile,
    check_fraction,
    finish_profile,
    period_keys,
    profile_cells,
)

__all__ = ["LiveFootprint", "LiveProfile"]


class LiveProfile:
    """`volume_profile(all trades fed, by, tick_size, value_area)`, fed in batches.

    `update(trades)` takes classified trades (a trades frame, e.g. what
    `DeltaEngine.feed` returns); `result()` is the profile of all of them so far. Memory:
    one row per (period, contract, level) that traded.
    """

    def __init__(
        self, by: object = None, tick_size: float | None = None, value_area: float = 0.70
    ) -> None:
        self.fraction = check_fraction(value_area, "value_area")
        if tick_size is not None:
            price_levels(np.zeros(1), tick_size)  # validates tick_size
        period_keys(trade_arrays(NO_TRADES), by)  # validates by
        self.by, self.tick_size = by, tick_size
        self._state: LevelState = merge_levels(profile_cells(NO_TRADES, by, tick_size)[0])
        self._starts: dict[int, int] | None = None if by is not None else {}

    def update(self, trades: pd.DataFrame) -> None:
        """Add a batch of classified trades (in arrival order, after those fed before)."""
        cells, starts = profile_cells(trades, self.by, self.tick_size)
        self._state = merge_levels(concat_states(self._state, cells))
        for contract, first in (starts or {}).items():
            self._starts[contract] = min(first, self._starts.get(contract, first))

    def result(self) -> VolumeProfile:
        return finish_profile(self._state, self.fraction, self._starts)


class LiveFootprint:
    """`footprint(all trades fed, interval, tick_size, ratio=, min_volume=, stacked=)`, fed
    in batches (`DeltaEngine.footprint` is the same with the default thresholds, bounded by
    its `max_bars`). Memory: one row per (bar, contract, level) that traded."""

    def __init__(
        self,
        interval: object = "1min",
        tick_size: float | None = None,
        *,
        ratio: float = DEFAULT_RATIO,
        min_volume: float = DEFAULT_MIN_VOLUME,
        stacked: int = DEFAULT_STACKED,
    ) -> None:
        self._step = to_nanos(interval, "interval")
        check_imbalance_args(ratio, min_volume, stacked)
        if tick_size is not None:
            price_levels(np.zeros(1), tick_size)  # validates tick_size
        self.interval, self.tick_size = interval, tick_size
        self.ratio, self.min_volume, self.stacked = ratio, min_volume, stacked
        self._state = level_rows(trade_arrays(NO_TRADES), self._step, tick_size)

    def update(self, trades: pd.DataFrame) -> None:
        """Add a batch of classified trades (in arrival order, after those fed before)."""
        a = trade_arrays(trades)
        tick = self.tick_size
        if tick is None:
            tick = contract_ticks(getattr(trades, "attrs", {}), a.contract)
        cells = level_rows(a, self._step, tick)
        self._state = merge_levels(concat_states(self._state, cells))

    def frame(self) -> pd.DataFrame:
        return finish_levels(self._state, self.ratio, self.min_volume, self.stacked)
