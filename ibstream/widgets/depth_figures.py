"""The profile and footprint figures (bqplot), drawn from `depth.ProfilePlot` /
`depth.FootprintPlot`.

Profile: horizontal bars of buy, sell and neutral volume per level (stacked), on the price
chart's own price scale, so its levels line up with the price beside it; the point of
control as a line, the value area's edges as dashed lines. Footprint: one cell per bar and level,
coloured by delta (sells red, buys green), "sell × buy" volume written in it (bid × ask: a
sell hits the bid), a triangle at each diagonal imbalance (up: buys over the sells a tick
below; down: sells over the buys a tick above) and a bar beside each stacked run of them.
Arrays sent are bounded by `depth`'s rows and bars.
"""

from __future__ import annotations

import numpy as np
from bqplot import (
    Axis,
    Bars,
    ColorScale,
    DateScale,
    Figure,
    GridHeatMap,
    Label,
    LinearScale,
    Lines,
    Scatter,
)

from ibstream.widgets.axes import extent, fit_axis
from ibstream.widgets.depth import FootprintPlot, ProfilePlot
from ibstream.widgets.headers import COLOURS

SIZE_FORMAT = ",~f"
NO_TIME = np.zeros(0, "M8[ns]")


class ProfileFigure:
    """Volume profile of the window beside the price chart (shares `price_scale`)."""

    def __init__(self, price_scale: LinearScale, tick: float, digits: int, unit: str) -> None:
        self.tick, self.price_scale = tick, price_scale
        self.volume_scale = LinearScale(min=0.0, max=1.0)
        scales = {"x": price_scale, "y": self.volume_scale}
        self.bars = Bars(
            x=np.zeros(0),
            y=np.zeros((3, 0)),
            scales=scales,
            orientation="horizontal",
            type="stacked",
            colors=[COLOURS["buy"], COLOURS["sell"], COLOURS["neutral"]],
            padding=0.1,
        )
        line_scales = {"x": self.volume_scale, "y": price_scale}
        self.value_area = Lines(  # its low and high edge, one line apart by a NaN point
            x=np.zeros(0),
            y=np.zeros(0),
            scales=line_scales,
            colors=[COLOURS["poc"]],
            line_style="dashed",
            stroke_width=1.5,
        )
        self.poc = Lines(x=np.zeros(0), y=np.zeros(0), scales=line_scales, colors=[COLOURS["poc"]])
        self.poc.stroke_width = 2.5
        self.price_axis = Axis(scale=price_scale, side="right", tick_format=f".{digits}f")
        self.volume_axis = Axis(
            scale=self.volume_scale,
            side="bottom",
            label=f"volume ({unit})",
            tick_format=SIZE_FORMAT,
            num_ticks=3,
        )
        self.figure = Figure(
            marks=[self.value_area, self.bars, self.poc],
            axes=[self.volume_axis, self.price_axis],
            fig_margin={"top": 16, "bottom": 42, "left": 8, "right": 64},
            animation_duration=0,
            layout={"width": "100%", "height": "300px"},
        )
        self.figure.add_class("ibstream-figure")
        self.figure.add_class("ibstream-profile")

    def draw(self, plot: ProfilePlot) -> None:
        total = plot.buy + plot.sell + plot.neutral
        fit_axis(self.volume_axis, extent(total, least=2.0, include=(0.0,)))
        top = float(self.volume_scale.max)
        centre = plot.price + (plot.row - self.tick) / 2  # a row's levels, middle
        with self.bars.hold_sync():
            self.bars.x = centre
            self.bars.y = _f32(np.vstack([plot.buy, plot.sell, plot.neutral]))
        known = np.isfinite(plot.poc)
        with self.poc.hold_sync():
            self.poc.x = np.array([0.0, top] if known else [])
            self.poc.y = np.array([plot.poc, plot.poc] if known else [])
        low, high = plot.value_low, plot.value_high
        with self.value_area.hold_sync():  # (a Lines of 2-D data created empty fails in JS)
            self.value_area.x = np.array([0.0, top, top, 0.0, top] if known else [])
            self.value_area.y = np.array([low, low, np.nan, high, high] if known else [])


class FootprintFigure:
    """The last bars × levels: bid × ask volume, delta colour, imbalances."""

    def __init__(self, tick: float, digits: int, left: int) -> None:
        self.tick = tick
        self.time = DateScale(allow_padding=False)
        self.price_scale = LinearScale(min=0.0, max=1.0)
        self.colour = ColorScale(
            colors=[COLOURS["sell"], COLOURS["even"], COLOURS["buy"]], mid=0.0, min=-1.0, max=1.0
        )
        self.cells = GridHeatMap(
            color=np.full((2, 2), np.nan),
            row=np.arange(3.0),
            column=np.arange(3).astype("M8[s]").astype("M8[ns]"),
            scales={"row": self.price_scale, "column": self.time, "color": self.colour},
            stroke="transparent",
            opacity=0.5,
        )
        xy = {"x": self.time, "y": self.price_scale}
        self.text = Label(
            x=NO_TIME,
            y=np.zeros(0),
            text=np.zeros(0, str),
            scales=xy,
            align="middle",
            colors=[COLOURS["text"]],
        )
        self.text.default_size, self.text.y_offset = 10.0, 4
        self.marks = {
            side: Scatter(
                x=NO_TIME,
                y=np.zeros(0),
                scales=xy,
                marker=marker,
                colors=[COLOURS[side]],
                default_size=28,
            )
            for side, marker in (("buy", "triangle-up"), ("sell", "triangle-down"))
        }
        self.stacks = {
            side: Lines(x=NO_TIME, y=np.zeros(0), scales=xy, colors=[COLOURS[side]])
            for side in ("buy", "sell")
        }
        for line in self.stacks.values():
            line.stroke_width = 4
        self.price_axis = Axis(
            scale=self.price_scale,
            side="left",
            label="price",
            label_offset="58px",
            tick_format=f".{digits}f",
        )
        self.figure = Figure(
            marks=[self.cells, *self.stacks.values(), self.text, *self.marks.values()],
            axes=[
                Axis(scale=self.time, label="time (UTC)", tick_format="%H:%M:%S", num_ticks=6),
                self.price_axis,
            ],
            fig_margin={"top": 16, "bottom": 42, "left": left, "right": 50},
            animation_duration=0,
            layout={"width": "100%", "height": "420px"},
        )
        self.figure.add_class("ibstream-figure")
        self.figure.add_class("ibstream-footprint")

    def draw(self, plot: FootprintPlot) -> None:
        if not len(plot.start) or not len(plot.price):
            return
        bar = plot.end - plot.start[-1]
        edges = np.append(plot.start, plot.end)
        rows = np.append(plot.price, plot.price[-1] + plot.row) - self.tick / 2
        delta = plot.buy - plot.sell
        colour = np.where(plot.trades > 0, delta, 0.0)  # bqplot draws NaN black: empty = even
        with self.time.hold_sync():
            self.time.min, self.time.max = edges[0], edges[-1]
        fit_axis(self.price_axis, (float(rows[0]), float(rows[-1])), self.tick)
        reach = float(np.nanmax(np.abs(delta), initial=1.0)) or 1.0
        with self.colour.hold_sync():
            self.colour.min, self.colour.max = -reach, reach
        rows, edges, colour = _padded(rows, edges, colour)
        with self.cells.hold_sync():  # bqplot checks row and column against the colours
            self.cells.row = self.cells.column = None
            self.cells.color = colour
            self.cells.row, self.cells.column = rows, edges
        level, column = np.nonzero(plot.trades > 0)
        middle = plot.start + bar // 2
        centre = plot.price + (plot.row - self.tick) / 2
        with self.text.hold_sync():
            self.text.x, self.text.y = middle[column], centre[level]
            self.text.text = np.array(
                [f"{_short(s)} × {_short(b)}" for s, b in zip(plot.sell[level, column],
                                                              plot.buy[level, column], strict=True)]
            )  # fmt: skip
        for side, flags, shift in (
            ("buy", plot.buy_imbalance, 0.42),
            ("sell", plot.sell_imbalance, -0.42),
        ):
            level, column = np.nonzero(flags)
            with self.marks[side].hold_sync():
                self.marks[side].x = middle[column] + (shift * bar).astype("m8[ns]")
                self.marks[side].y = _f32(centre[level])
        for side, stacked, shift in (
            ("buy", plot.buy_stacked, 0.48),
            ("sell", plot.sell_stacked, -0.48),
        ):
            x, y = _stack_lines(stacked, middle + (shift * bar).astype("m8[ns]"), rows)
            with self.stacks[side].hold_sync():
                self.stacks[side].x, self.stacks[side].y = x, y


def _stack_lines(
    stacked: np.ndarray, x: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One vertical segment per stacked run (rows' edges), runs apart by a NaN point."""
    xs, ys = [], []
    for column in range(stacked.shape[1]):
        flags = np.concatenate([[False], stacked[:, column], [False]])
        change = np.flatnonzero(np.diff(flags.view(np.int8)))
        for first, end in zip(change[::2], change[1::2], strict=True):
            xs += [x[column]] * 3
            ys += [rows[first], rows[end], np.nan]
    # no NaN point last: bqplot places the line's label at its last point
    return np.array(xs[:-1], "M8[ns]"), np.array(ys[:-1], np.float64)


def _padded(
    rows: np.ndarray, columns: np.ndarray, colour: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At least two rows and columns (bqplot squeezes a grid of one to a line)."""
    if len(rows) < 3:
        rows = np.append(rows, rows[-1] + (rows[-1] - rows[0] or 1.0))
        colour = np.vstack([colour, np.full((1, colour.shape[1]), np.nan)])
    if len(columns) < 3:
        columns = np.append(columns, columns[-1] + (columns[-1] - columns[0]))
        colour = np.hstack([colour, np.full((colour.shape[0], 1), np.nan)])
    return rows, columns, colour


def _short(volume: float) -> str:
    """A cell's volume in few characters: 7, 0.25, 1.2k."""
    if volume >= 10_000:
        return f"{volume / 1000:.0f}k"
    if volume >= 1000:
        return f"{volume / 1000:.1f}k"
    return f"{volume:.0f}" if volume == int(volume) else f"{volume:.2g}"


def _f32(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float32)
