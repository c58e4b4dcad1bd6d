"""The dashboard's status line: connection, transport, ticks received, last tick age,
reconnects, gaps, and anything wrong, as one line of text a person can act on."""

from __future__ import annotations

import html
from dataclasses import dataclass

import ipywidgets as widgets

from ibstream.errors import StreamError


@dataclass(frozen=True)
class Status:
    """What the status line says; `ticks` counts every tick received since the start."""

    contract: str
    state: str
    transport: str
    ticks: int
    trades: int
    last_tick_age: float | None  # seconds, None before the first tick
    reconnects: int
    gaps: int
    paused: bool = False
    dropped: int = 0
    problem: str = ""

    def text(self) -> str:
        age = "no tick yet" if self.last_tick_age is None else _age(self.last_tick_age)
        parts = [
            self.contract,
            f"{self.state} ({self.transport})",
            f"ticks {self.ticks}",
            f"trades {self.trades}",
            age,
            f"reconnects {self.reconnects}",
            f"gaps {self.gaps}",
        ]
        if self.paused:
            parts.append("PAUSED (still receiving)")
        if self.dropped:
            parts.append(f"{self.dropped} ticks dropped: the kernel fell behind")
        if self.problem:
            parts.append(self.problem)
        return " · ".join(parts)


class StatusLine(widgets.HTML):
    """An HTML line (CSS class `ibstream-status`); red when something is wrong."""

    def __init__(self) -> None:
        super().__init__(value="<span>starting</span>")
        self.add_class("ibstream-status")
        self.text = "starting"

    def show(self, status: Status) -> None:
        text = status.text()
        if text == self.text:
            return
        self.text = text
        wrong = status.problem or status.dropped or status.state not in ("connected",)
        style = "font-family: var(--jp-code-font-family);"
        style += " color: var(--jp-error-color1, #d32f2f);" if wrong else ""
        self.value = f'<span style="{style}">{html.escape(text)}</span>'


def problem(error: object, fine: bool, failures: int, rejected: str = "") -> str:
    """What is wrong, for the status line: the stream's error, the stream ended (`fine`
    is False: neither active nor closed on purpose), failed redraws, or tick batches the
    analytics rejected (`rejected`, the model's own words)."""
    if isinstance(error, StreamError):
        return f"stream error {error.code}: {error.message}"
    if not fine:
        return "the server ended the stream"
    if failures:
        return f"redraw failed {failures} time(s); see the log"
    return rejected


def _age(seconds: float) -> str:
    if seconds < 10:
        return f"last tick {seconds:.1f} s ago"
    return f"last tick {seconds:.0f} s ago"
