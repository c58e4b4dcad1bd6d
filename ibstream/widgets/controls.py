"""The dashboard's controls: window, bar interval, classification method, pause / resume,
"to DataFrame" and "save Parquet", with a message line saying what each one did."""

from __future__ import annotations

import html
import logging
from collections.abc import Callable

import ipywidgets as widgets
import pandas as pd

from ibstream.analytics import METHODS

log = logging.getLogger("ibstream.widgets")
WINDOWS = ("1min", "5min", "15min", "30min")
BARS = ("1s", "5s", "15s", "1min", "5min")
METHOD_LABELS = {
    "lee_ready": "Lee-Ready",
    "quote": "quote rule",
    "tick": "tick test",
    "emo": "EMO",
    "clnv": "CLNV",
}


class Controls(widgets.VBox):
    """Widgets only: each action calls the function given for it, and its return value or
    error becomes the message line (CSS class `ibstream-message`)."""

    def __init__(
        self,
        *,
        window: str,
        bar: str,
        method: str,
        path: str,
        on_settings: Callable[[str, str, str], str],
        on_pause: Callable[[bool], str],
        on_frames: Callable[[], str],
        on_save: Callable[[str], str],
    ) -> None:
        self._quiet = False  # set while show_settings changes the dropdowns
        style = {"description_width": "initial"}
        narrow = widgets.Layout(width="150px")
        self.window = widgets.Dropdown(
            options=with_option(WINDOWS, window), value=window, description="window", style=style,
            layout=narrow,
        )  # fmt: skip
        self.bar = widgets.Dropdown(
            options=with_option(BARS, bar), value=bar, description="bar", style=style, layout=narrow
        )
        self.method = widgets.Dropdown(
            options=[(METHOD_LABELS.get(m, m), m) for m in METHODS],
            value=method,
            description="method",
            style=style,
            layout=widgets.Layout(width="190px"),
        )
        self.pause = widgets.ToggleButton(value=False, description="Pause", icon="pause")
        self.frames = widgets.Button(description="to DataFrame", icon="table")
        self.path = widgets.Text(value=path, description="file", style=style)
        self.save = widgets.Button(description="save Parquet", icon="save")
        self.message = widgets.HTML()
        for widget, css in (
            (self.window, "ibstream-window"),
            (self.bar, "ibstream-bar"),
            (self.method, "ibstream-method"),
            (self.pause, "ibstream-pause"),
            (self.frames, "ibstream-frames"),
            (self.path, "ibstream-path"),
            (self.save, "ibstream-save"),
            (self.message, "ibstream-message"),
        ):
            widget.add_class(css)

        def settings(change: dict) -> None:
            if not self._quiet:
                self._run(lambda: on_settings(self.window.value, self.bar.value, self.method.value))

        for dropdown in (self.window, self.bar, self.method):
            dropdown.observe(settings, names="value")
        self.pause.observe(self._toggled(on_pause), names="value")
        self.frames.on_click(lambda _: self._run(on_frames))
        self.save.on_click(lambda _: self._run(lambda: on_save(self.path.value)))
        row1 = widgets.HBox([self.window, self.bar, self.method, self.pause])
        row2 = widgets.HBox([self.frames, self.path, self.save])
        super().__init__([row1, row2, self.message])
        self.add_class("ibstream-controls")

    def show_settings(self, window: str, bar: str, method: str) -> None:
        """Show settings applied from code, without acting on them again."""
        self._quiet = True
        try:
            self.window.options = with_option(tuple(self.window.options), window)
            self.bar.options = with_option(tuple(self.bar.options), bar)
            self.window.value, self.bar.value, self.method.value = window, bar, method
        finally:
            self._quiet = False

    def say(self, text: str, error: bool = False) -> None:
        style = ' style="color: var(--jp-error-color1, #d32f2f);"' if error else ""
        self.message.value = f"<span{style}>{html.escape(text)}</span>"

    def _toggled(self, on_pause: Callable[[bool], str]) -> Callable[[dict], None]:
        def toggled(change: dict) -> None:
            paused = bool(change["new"])
            self.pause.description, self.pause.icon = (
                ("Resume", "play") if paused else ("Pause", "pause")
            )
            self._run(lambda: on_pause(paused))

        return toggled

    def _run(self, action: Callable[[], str | None]) -> None:
        """Run a control's action; its message (None: say nothing) or error is shown."""
        try:
            message = action()
            if message is not None:
                self.say(message)
        except Exception as exc:  # shown where the user clicked, and logged
            log.warning("dashboard control failed: %s", exc, exc_info=True)
            self.say(f"{type(exc).__name__}: {exc}", error=True)


def with_option(options: tuple[str, ...], value: str) -> list[str]:
    """The options, plus `value` in duration order if it is not among them."""
    if value in options:
        return list(options)
    return sorted([*options, value], key=pd.Timedelta)


def duration_label(value: object, name: str) -> str:
    """A duration as the controls show it: a string as given ('5min'), else seconds."""
    try:
        if isinstance(value, str):
            pd.Timedelta(value)
            return value
        return f"{pd.Timedelta(value).total_seconds():g}s"
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a duration such as '5min', got {value!r}") from None
