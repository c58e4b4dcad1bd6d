"""The dashboard's bqplot figures and how a redraw updates them.

Four figures share one time scale (UTC: bqplot formats date axes in UTC): price with the
bid/ask band and the trades per side (bubble area by volume, one bubble per side and time
bucket), buy and sell volume per bar (sells below zero), the cumulative delta, and buy %
per bar. Each has a header above it (title and colour key: outside the plot, so the key
hides no data). A redraw assigns new arrays to the marks under `hold_sync`, one message per
mark; the arrays come from `LiveModel.plot()`, so their length is bounded by the window's
buckets and bars, not by the ticks. The time scale spans the window exactly and value axes
get their domain and ticks from `axes` (never NaN, never zero wide). Colours are mid-tones
that read on light and dark backgrounds; backgrounds, axes and text follow the JupyterLab
theme through bqplot's own CSS.
"""

from __future__ import annotations

import math

import numpy as np
from bqplot import Axis, Bars, DateScale, Figure, LinearScale, Lines, Scatter
from ipywidgets import HBox, Widget

from ibstream.model import price_decimals
from ibstream.widgets.axes import extent, fit_axis
from ibstream.widgets.depth_figures import FootprintFigure, ProfileFigure
from ibstream.widgets.headers import COLOURS, PLOT_LEFT, header, header_html
from ibstream.widgets.model import PlotData
from ibstream.widgets.panels import DEFAULT_PANELS, check_panels

MARGIN = {"top": 16, "bottom": 42, "left": PLOT_LEFT, "right": 50}  # right: last time label
TIME_FORMAT = "%H:%M:%S"
SIZE_FORMAT = ",~f"  # 1,250 and 2.5
LEAST_SIZE = 2.0  # the volume and delta axes span at least this much
DELTA_KEY = [("delta", "━ buys - sells")]


class Figures:
    """The figures of `panels` (`panels.PANELS`) and their headers; `draw(plot)` shows a
    `PlotData`. `min_tick` (the contract's price increment) sets the price axis' decimals
    and its least tick step, and the levels of the profile and footprint."""

    def __init__(
        self,
        currency: str = "",
        size_unit: str = "contracts",
        min_tick: object = 0.01,
        panels: object = DEFAULT_PANELS,
    ) -> None:
        self.panels = check_panels(panels)
        digits = price_decimals(min_tick)
        try:
            tick = float(min_tick)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            tick = 0.0
        self.min_tick = tick if math.isfinite(tick) and tick > 0 else 10.0**-digits
        # no padding: bars would widen their figure's margins, and the four time axes
        # would no longer line up (with one bar bqplot even turns the axis around)
        self.time = DateScale(allow_padding=False)
        self.price_scale, self.size_scale = LinearScale(min=0.0, max=1.0), LinearScale(min=0)
        self.band = Lines(
            x=np.zeros(0, "M8[ns]"),
            y=np.zeros((2, 0)),
            scales={"x": self.time, "y": self.price_scale},
            colors=[COLOURS["bid"], COLOURS["ask"]],
            fill="between",
            fill_colors=[COLOURS["band"]],
            fill_opacities=[0.2],
            interpolation="step-after",
            labels=["bid", "ask"],
            stroke_width=1.5,
        )
        self.trades = {
            side: Scatter(
                x=np.zeros(0, "M8[ns]"),
                y=np.zeros(0),
                size=np.zeros(0),
                scales={"x": self.time, "y": self.price_scale, "size": self.size_scale},
                colors=[COLOURS[side]],
                opacities=[0.75],
                default_size=200,
                labels=[side],
            )
            for side in ("buy", "sell", "neutral")
        }
        unit = f" ({currency})" if currency else ""
        self.price = self._figure(
            [self.band, *self.trades.values()],
            self.price_scale,
            f"price{unit}",
            f".{digits}f",
            "ibstream-price",
            height="300px",
        )
        volume_scale = LinearScale(min=-1.0, max=1.0)
        # no legend on the bars: bqplot's legend code fails on Bars created empty
        self.buys, self.sells = (
            Bars(
                x=np.zeros(0, "M8[ns]"),
                y=np.zeros(0),
                scales={"x": self.time, "y": volume_scale},
                colors=[COLOURS[side]],
                labels=[label],
                padding=0.1,
                align="right",  # a bar spans [start, start + interval)
            )
            for side, label in (("buy", "buy volume"), ("sell", "sell volume"))
        )
        self.volume = self._figure(
            [self.buys, self.sells],
            volume_scale,
            f"volume ({size_unit})",
            SIZE_FORMAT,
            "ibstream-volume",
        )
        self.delta_line = self._line(LinearScale(min=-1.0, max=1.0), "delta", "cumulative delta")
        self.delta = self._figure(
            [self.delta_line],
            self.delta_line.scales["y"],
            f"buys - sells ({size_unit})",
            SIZE_FORMAT,
            "ibstream-delta",
        )
        pct_scale = LinearScale(min=0, max=100)
        self.buy_pct_line = self._line(pct_scale, "buy_pct", "buy % per bar")
        self.buy_pct_line.marker = "circle"
        self.buy_pct_line.marker_size = 16
        self.even = Lines(
            x=np.zeros(0, "M8[ns]"),
            y=np.zeros(0),
            scales={"x": self.time, "y": pct_scale},
            colors=[COLOURS["neutral"]],
            line_style="dashed",
            stroke_width=1,
        )
        self.buy_pct = self._figure(
            [self.even, self.buy_pct_line], pct_scale, "buy %", ".0f", "ibstream-buy-pct"
        )
        self.buy_pct.axes[1].tick_values = np.array([0.0, 25.0, 50.0, 75.0, 100.0])
        self.headers = {
            "price": header(
                "Price, bid/ask and trades (bubble area: volume)",
                [("bid", "━ bid"), ("ask", "━ ask"), ("buy", "● buys"), ("sell", "● sells")]
                + [("neutral", "● neutral")],
            ),
            "volume": header(
                "Volume per bar", [("buy", "■ buys"), ("sell", "■ sells (below zero)")]
            ),
            "delta": header("Cumulative delta", DELTA_KEY),
            "buy_pct": header(
                "Buy % of buy + sell volume per bar",
                [("buy_pct", "●━ buy %"), ("neutral", "┅ 50 %")],
            ),
        }
        self.profile = self.footprint = None
        self.beside: HBox | None = None  # the price chart and the profile, one row
        if "profile" in self.panels:
            self.profile = ProfileFigure(self.price_scale, self.min_tick, digits, size_unit)
            key = [("buy", "■ buys"), ("sell", "■ sells"), ("poc", "━ POC ┅ value area")]
            self.headers["profile"] = header("Volume profile", key)
            if "price" in self.panels:  # one header over both, so the plots line up
                self.headers["price"] = header(
                    "Price, bid/ask and trades (bubble area: volume); volume profile",
                    [("bid", "━ bid"), ("ask", "━ ask"), ("buy", "● ■ buys")]
                    + [("sell", "● ■ sells"), ("neutral", "● neutral")] + key[2:],
                )  # fmt: skip
                self.price.layout.flex = "4 1 0%"
                self.profile.figure.layout.flex = "1 1 0%"
                self.profile.figure.layout.min_width = "180px"
                self.beside = HBox([self.price, self.profile.figure], layout={"width": "100%"})
        if "footprint" in self.panels:
            self.footprint = FootprintFigure(self.min_tick, digits, PLOT_LEFT)
            self.headers["footprint"] = header(
                "Footprint: sell × buy volume per bar and level, colour: delta",
                [("buy", "▲ buy imbalance"), ("sell", "▼ sell imbalance")]
                + [("neutral", "┃ stacked (3+)")],
            )  # fmt: skip

    @property
    def figures(self) -> list[Figure]:
        """The figures shown, in the order of `panels.PANELS`."""
        every = {"price": self.price, "volume": self.volume, "delta": self.delta}
        every |= {"buy_pct": self.buy_pct}
        every |= {"profile": getattr(self.profile, "figure", None)}
        every |= {"footprint": getattr(self.footprint, "figure", None)}
        return [every[name] for name in self.panels]

    @property
    def widgets(self) -> list[Widget]:
        """Header and figure of each shown panel, in order (the profile beside the price
        chart when both are on): what the dashboard shows."""
        out: list[Widget] = []
        for name, figure in zip(self.panels, self.figures, strict=True):
            if name == "profile" and "price" in self.panels:
                continue
            out += [self.headers[name], self.beside if name == "price" and self.beside else figure]
        return out

    def marks(self) -> dict[str, object]:
        """Every data mark by name (what tests and the browser check look at)."""
        return {
            "band": self.band,
            **{f"{side}_trades": mark for side, mark in self.trades.items()},
            "buy_volume": self.buys,
            "sell_volume": self.sells,
            "delta": self.delta_line,
            "buy_pct": self.buy_pct_line,
            **({"profile": self.profile.bars} if self.profile else {}),
            **({"footprint": self.footprint.text} if self.footprint else {}),
        }

    def draw(self, plot: PlotData) -> None:
        """Show `plot`: one message per mark; values go as float32 (half the bytes, and
        more digits than a plot shows), times as bqplot sends them (float64 ms)."""
        if plot.end is None:
            return
        with self.time.hold_sync():
            self.time.min, self.time.max = plot.start, plot.end
        if "price" in self.panels or "profile" in self.panels:
            prices = [price for _, price, _ in plot.trades.values()]
            price_range = extent(plot.bid, plot.ask, *prices, least=4 * self.min_tick)
            fit_axis(self.price.axes[1], price_range, self.min_tick)
        for name in self.panels:
            getattr(self, f"_draw_{name}")(plot)

    def _draw_price(self, plot: PlotData) -> None:
        with self.band.hold_sync():
            self.band.x, self.band.y = plot.quote_time, _f32(np.vstack([plot.bid, plot.ask]))
        for side, mark in self.trades.items():
            time, price, volume = plot.trades[side]
            with mark.hold_sync():
                mark.x, mark.y, mark.size = time, _f32(price), _f32(volume)

    def _draw_volume(self, plot: PlotData) -> None:
        fit_axis(self.volume.axes[1], extent(plot.buy, plot.sell, least=LEAST_SIZE, include=(0.0,)))
        for mark, values in ((self.buys, plot.buy), (self.sells, plot.sell)):
            with mark.hold_sync():
                mark.x, mark.y = plot.bar_time, _f32(values)

    def _draw_delta(self, plot: PlotData) -> None:
        fit_axis(self.delta.axes[1], extent(plot.delta, least=LEAST_SIZE))
        with self.delta_line.hold_sync():
            self.delta_line.x, self.delta_line.y = plot.delta_time, _f32(plot.delta)
        since = np.datetime_as_string(plot.delta_since, unit="s").replace("T", " ")
        self.headers["delta"].value = header_html(f"Cumulative delta since {since} UTC", DELTA_KEY)

    def _draw_buy_pct(self, plot: PlotData) -> None:
        with self.buy_pct_line.hold_sync():
            self.buy_pct_line.x, self.buy_pct_line.y = plot.bar_time, _f32(plot.buy_pct)
        with self.even.hold_sync():  # the 50 % line across the window
            self.even.x = np.array([plot.start, plot.end])
            self.even.y = np.array([50.0, 50.0], np.float32)

    def _draw_profile(self, plot: PlotData) -> None:
        if self.profile is not None and plot.profile is not None:
            self.profile.price_axis.tick_values = self.price.axes[1].tick_values
            self.profile.draw(plot.profile)

    def _draw_footprint(self, plot: PlotData) -> None:
        if self.footprint is not None and plot.footprint is not None:
            self.footprint.draw(plot.footprint)

    def _line(self, scale: LinearScale, colour: str, label: str) -> Lines:
        return Lines(
            x=np.zeros(0, "M8[ns]"),
            y=np.zeros(0),
            scales={"x": self.time, "y": scale},
            colors=[COLOURS[colour]],
            labels=[label],
            stroke_width=2,
        )

    def _figure(
        self,
        marks: list,
        y_scale: LinearScale,
        y_label: str,
        y_format: str,
        css: str,
        height: str = "190px",
    ) -> Figure:
        axes = [
            Axis(scale=self.time, label="time (UTC)", tick_format=TIME_FORMAT, num_ticks=6),
            Axis(
                scale=y_scale,
                side="left",
                label=y_label,
                label_offset="58px",
                tick_format=y_format,
            ),
        ]
        figure = Figure(
            marks=marks,
            axes=axes,
            fig_margin=MARGIN,
            animation_duration=0,
            layout={"width": "100%", "height": height},
        )
        figure.add_class("ibstream-figure")
        figure.add_class(css)
        return figure


def widget_tree(widget: Widget) -> list[Widget]:
    """The widgets under `widget`: boxes' children, figures' marks, axes and scales."""
    out: list[Widget] = []
    for name in ("children", "marks", "axes"):
        for child in getattr(widget, name, ()):
            out += [child, *widget_tree(child)]
    value = getattr(widget, "scales", None) or {}
    out += list(value.values()) if isinstance(value, dict) else []
    if isinstance(getattr(widget, "scale", None), Widget):
        out.append(widget.scale)
    return out


def _f32(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float32)
