"""The dashboard's data side, without widgets: tick batches in, plot arrays out.

`LiveModel.feed` takes each batch once: the incremental `DeltaEngine` classifies it and
carries the bars and the cumulative delta; time buckets (`series.Buckets`, `points` per
window) keep the bid/ask band, the trades per side and the delta path. `plot()` then costs
O(buckets + bars), never O(ticks since start). The raw ticks and trades of the window are
kept for export and for `configure`, which rebuilds everything from them. A batch the
engine rejects is kept out of all of it (the model is rebuilt from the window without it)
and counted in `rejected`, with the reason in `problem`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ibstream.analytics import DeltaEngine, empty_trades, resolve_method, trades_frame
from ibstream.analytics.kernels import to_nanos
from ibstream.client.frames import empty_ticks, ticks_to_frame
from ibstream.widgets.depth import FootprintPlot, ProfilePlot, footprint_plot, profile_plot
from ibstream.widgets.levels import LevelBook
from ibstream.widgets.series import Buckets, Recent

log = logging.getLogger("ibstream.widgets")
SIDES = ("buy", "sell", "neutral")
POINTS = 300  # buckets per window: points per line, and at most per side of the trades
MAX_TICKS = 1_000_000  # raw ticks kept for export and rebuilds (memory: ~100 bytes each)


@dataclass(frozen=True)
class PlotData:
    """What the figures show; times are naive UTC `datetime64[ns]`. `trades` maps a side
    to (time, volume-weighted price, volume) per bucket; `bar_time` holds bar starts and
    `sell` volumes are negative."""

    start: np.datetime64 | None = None
    end: np.datetime64 | None = None
    quote_time: np.ndarray = field(default_factory=lambda: _times([]))
    bid: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ask: np.ndarray = field(default_factory=lambda: np.zeros(0))
    trades: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    delta_time: np.ndarray = field(default_factory=lambda: _times([]))
    delta: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bar_time: np.ndarray = field(default_factory=lambda: _times([]))
    buy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sell: np.ndarray = field(default_factory=lambda: np.zeros(0))
    buy_pct: np.ndarray = field(default_factory=lambda: np.zeros(0))
    delta_since: np.datetime64 | None = None
    profile: ProfilePlot | None = None  # with `levels=True` only
    footprint: FootprintPlot | None = None


class LiveModel:
    """Live analytics of one contract's ticks over a sliding `window`, in `bar` bars,
    trades classified by `method` (see `ibstream.analytics.classify`). With `levels`, the
    window's volume per bar and price level too (`levels.LevelBook`, on the grid of
    `tick_size`: the contract's min tick), for the profile and footprint panels."""

    def __init__(
        self,
        window: object = "5min",
        bar: object = "5s",
        method: str | None = None,
        *,
        points: int = POINTS,
        max_ticks: int = MAX_TICKS,
        levels: bool = False,
        tick_size: float = 0.01,
    ) -> None:
        if type(points) is not int or points < 2:
            raise ValueError(f"points must be an int >= 2, got {points!r}")
        number = isinstance(tick_size, int | float) and not isinstance(tick_size, bool)
        if not (number and math.isfinite(tick_size) and tick_size > 0):
            raise ValueError(f"tick_size must be a positive number, got {tick_size!r}")
        self.with_levels, self.tick_size = bool(levels), float(tick_size)
        self.points, self.max_ticks = points, max_ticks
        self._ticks: Recent | None = None
        self.rejected, self.problem = 0, ""  # ticks the engine rejected, and why (the last)
        self.configure(window, bar, method)

    def configure(
        self, window: object = None, bar: object = None, method: str | None = None
    ) -> None:
        """Change window, bar interval and/or method, and rebuild from the ticks kept (the
        cumulative delta then starts at the first of them)."""
        window = self.window if window is None else window
        bar = self.bar if bar is None else bar
        span, step = to_nanos(window, "window"), to_nanos(bar, "bar")
        method = resolve_method(method if method is not None else getattr(self, "method", None))
        kept = self.ticks() if self._ticks is not None else None
        self.window, self.bar, self.method = pd.Timedelta(span), pd.Timedelta(step), method
        self._span = span
        self.engine = DeltaEngine(
            method, window=bar, bar_interval=bar, max_bars=math.ceil(span / step) + 1, max_trades=1
        )
        width = max(1, span // self.points)
        self.quotes = Buckets(width, span, lasts=("bid", "ask"))
        self.flows = {side: Buckets(width, span, sums=("volume", "pv")) for side in SIDES}
        self.delta = Buckets(width, span, lasts=("delta",))
        self.levels = LevelBook(step, self.tick_size) if self.with_levels else None
        self._ticks = Recent(span, self.max_ticks, pd.concat)
        self._trades = Recent(span, self.max_ticks, pd.concat)
        self._last: int | None = None
        self._cumulative = 0.0
        self.delta_since: int | None = None
        self.ticks_fed = self.trades_fed = 0
        if kept is not None and len(kept):
            self.feed(kept)

    def feed(self, ticks: pd.DataFrame | Sequence[Mapping]) -> pd.DataFrame:
        """Take a batch of ticks (a tick frame, or tick `data` dicts as on the wire: the
        cheaper path) in arrival order; returns its classified trades. Stamps that go back (a clock step)
        are held at the last one, as the engine needs. A batch the engine rejects raises
        its error after the model is put back as it was before the batch."""
        rows = None if isinstance(ticks, pd.DataFrame) else list(ticks)
        frame = ticks_to_frame(rows) if rows is not None else ticks
        if frame.empty:
            return empty_trades()
        stamps = frame.index.as_unit("ns").asi8
        floor = stamps[0] if self._last is None else self._last
        held = np.maximum.accumulate(np.concatenate([[floor], stamps]))[1:]
        if (held != stamps).any():
            frame = frame.set_axis(
                pd.DatetimeIndex(held.view("M8[ns]"), name="time").tz_localize("UTC")
            )
            if rows is not None:
                rows = [r | {"recv_ns": int(h)} for r, h in zip(rows, held.tolist(), strict=True)]
            stamps = held
        try:  # wire rows take the engine's per-tick path; the window keeps a frame per batch
            fed = self.engine.feed(frame if rows is None else rows)
            trades = fed if isinstance(fed, pd.DataFrame) else trades_frame(fed)
        except Exception as exc:
            self._reject(len(frame), exc)
            raise
        self._last = int(stamps[-1])
        self.delta_since = self.delta_since or int(stamps[0])
        self._ticks.add(stamps, frame)
        quotes = (frame["tick_type"] == "bid_ask").to_numpy(bool)
        self.quotes.add(
            stamps[quotes],
            bid=frame["bid_price"].to_numpy()[quotes],
            ask=frame["ask_price"].to_numpy()[quotes],
        )
        self.ticks_fed += len(frame)
        if len(trades):
            self._add_trades(trades)
        if self.levels is not None:  # quotes move the window too
            self.levels.trim(self._first_bar())
        return trades

    def _reject(self, ticks: int, exc: Exception) -> None:
        """The engine may have taken part of the batch: rebuild it from the window's ticks."""
        self.rejected += ticks
        self.problem = f"{self.rejected} ticks rejected by the analytics, the last because: {exc}"
        log.warning("live model: a batch of %d ticks was rejected: %s", ticks, exc)
        self.configure()  # keeps `rejected` and `problem`

    def _add_trades(self, trades: pd.DataFrame) -> None:
        time = trades.index.as_unit("ns").asi8
        side = trades["side"].cat.codes.to_numpy()
        price = trades["price"].to_numpy()
        size = np.nan_to_num(trades["size"].to_numpy(), nan=0.0)  # no size: counts as none
        signed = np.where(side == 0, size, np.where(side == 1, -size, 0.0))
        path = self._cumulative + np.cumsum(signed)
        self._cumulative = float(path[-1])
        self.delta.add(time, delta=path)
        for code, name in enumerate(SIDES):
            mine = side == code
            self.flows[name].add(time[mine], volume=size[mine], pv=price[mine] * size[mine])
        self._trades.add(time, trades)
        self.trades_fed += len(trades)
        if self.levels is not None:
            self.levels.add(time, price, side, size)

    @property
    def cumulative_delta(self) -> float:
        """Signed volume summed since `delta_since` (buys +, sells -)."""
        return self._cumulative

    def plot(self) -> PlotData:
        """The arrays to draw now: O(points + bars)."""
        if self._last is None:
            return PlotData()
        bars = self.bars()
        buy, sell = bars["buy_volume"].to_numpy(), bars["sell_volume"].to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            pct = 100.0 * buy / (buy + sell)
        trades = {}
        for name, b in self.flows.items():
            with np.errstate(divide="ignore", invalid="ignore"):
                trades[name] = (_times(b.time), b["pv"] / b["volume"], b["volume"])
        return PlotData(
            start=np.datetime64(self._last - self._span, "ns"),
            end=np.datetime64(self._last, "ns"),
            quote_time=_times(self.quotes.time),
            bid=self.quotes["bid"],
            ask=self.quotes["ask"],
            trades=trades,
            delta_time=_times(self.delta.time),
            delta=self.delta["delta"],
            bar_time=_times(bars.index.as_unit("ns").asi8),
            buy=buy,
            sell=-sell,
            buy_pct=pct,
            delta_since=np.datetime64(self.delta_since, "ns"),
            profile=None if self.levels is None else profile_plot(self.levels),
            footprint=None if self.levels is None else footprint_plot(self.levels),
        )

    def ticks(self) -> pd.DataFrame:
        """The ticks of the window (at most `max_ticks`), a tick frame in arrival order."""
        return self._window(self._ticks, empty_ticks)

    def trades(self) -> pd.DataFrame:
        """The classified trades of the window, a trades frame."""
        return self._window(self._trades, empty_trades)

    def bars(self) -> pd.DataFrame:
        """The bars of the window (the engine's `bars()`: the open bar last)."""
        bars = self.engine.bars()
        if self._last is None or bars.empty:
            return bars
        return bars[bars.index.as_unit("ns").asi8 >= self._first_bar()]

    def _first_bar(self) -> int:
        """The start of the window's first bar (bars, profile and footprint begin there)."""
        return (self._last - self._span) // self.bar.value * self.bar.value

    def _window(self, store: Recent | None, empty: object) -> pd.DataFrame:
        items = store.items() if store is not None else []
        if not items:
            return empty()  # type: ignore[operator]
        frame = pd.concat(items) if len(items) > 1 else items[0]
        frame = frame[frame.index.as_unit("ns").asi8 > self._last - self._span]
        return frame.iloc[-self.max_ticks :]


def _times(nanos: object) -> np.ndarray:
    return np.asarray(nanos, np.int64).view("M8[ns]")
