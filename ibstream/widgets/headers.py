"""The headers above the dashboard's figures: a title and a colour key, in HTML beside the
plot rather than as a bqplot legend, so the key never covers data (and empty `Bars` never
meet bqplot's legend code)."""

from __future__ import annotations

import html

from ipywidgets import HTML

COLOURS = {
    "bid": "#3b82f6",  # blue
    "ask": "#f97316",  # orange
    "band": "#94a3b8",  # slate, faint fill between bid and ask
    "buy": "#16a34a",  # green
    "sell": "#dc2626",  # red
    "neutral": "#a3a3a3",  # grey
    "delta": "#8b5cf6",  # violet
    "buy_pct": "#0ea5e9",  # sky
    "poc": "#d97706",  # amber: point of control and value area
    "even": "#e2e8f0",  # a footprint cell of as much buying as selling (or none)
    "text": "#1e293b",  # the volumes written in the footprint's cells
}
PLOT_LEFT = 75  # px: the figures' left margin, where their plot areas start


def header(title: str, key: list[tuple[str, str]], left: int = PLOT_LEFT) -> HTML:
    """A header widget, lined up with the plot area (`left` px in); `key`: (colour name,
    label) pairs."""
    box = HTML(header_html(title, key), layout={"margin": f"6px 0 0 {left}px"})
    box.add_class("ibstream-header")
    return box


def header_html(title: str, key: list[tuple[str, str]]) -> str:
    """The header's HTML (to update a header's `value`)."""
    items = "&emsp;".join(
        f'<span style="color:{COLOURS[colour]}">{html.escape(label)}</span>'
        for colour, label in key
    )
    return f"<b>{html.escape(title)}</b>&emsp;&emsp;{items}"
