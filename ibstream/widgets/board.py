"""`ibstream.dashboard("ES")`: live buy/sell pressure and delta of one contract in Jupyter.

    dash = ibstream.dashboard("ES")   # shows itself as the cell's output and keeps updating
    dash.ticks, dash.trades, dash.bars  # the window's frames, current whenever read
    dash.close()                      # unsubscribe, stop redrawing, remove the widgets

The sync `Client` receives ticks on its own loop thread and drops them into an `Inbox`; a
`Ticker` on the kernel's running asyncio loop takes them at most 10 times a second, feeds
the `LiveModel` and redraws, so every widget message leaves from the kernel thread and
cells run freely in between. Without a running loop (a plain script) a daemon thread does
the stepping; `refresh()` steps by hand. Time axes are in UTC.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import ipywidgets as widgets
import pandas as pd

from ibstream.analytics import resolve_method
from ibstream.client import Client
from ibstream.client.history import HistoryIncompleteWarning
from ibstream.errors import StreamConnectionError, StreamError
from ibstream.widgets import exports, live
from ibstream.widgets.controls import Controls, duration_label
from ibstream.widgets.figures import Figures, widget_tree
from ibstream.widgets.model import LiveModel
from ibstream.widgets.panels import DEFAULT_PANELS, LEVEL_PANELS, check_panels
from ibstream.widgets.schedule import Inbox, Ticker
from ibstream.widgets.seam import Seam, history_span
from ibstream.widgets.status import Status, StatusLine, problem

log = logging.getLogger("ibstream.widgets")
TICK_TYPES = ("bid_ask", "last")
MIN_INTERVAL = 0.1  # seconds between redraws, at least
FIVE_MINUTES = 300 * 1_000_000_000
SECOND_MARGIN = 0.05  # seconds past a whole second before IB's history is taken to hold it
SIZE_UNITS = {"STK": "shares", "CASH": "units", "CRYPTO": "units"}  # else contracts


def dashboard(
    contract: str | int,
    server: str | None = None,
    *,
    transport: str = "websocket",
    window: object = None,
    bar: object = "5s",
    method: str | None = None,
    client: Client | None = None,
    token: str | None = None,
    interval: float = 0.1,
    history: object = None,
    panels: object = DEFAULT_PANELS,
) -> Dashboard:
    """Subscribe to `contract` (quotes and trades) and return the live dashboard.

    `server` defaults to $IBSTREAM_URL or http://127.0.0.1:8001; pass `client` to share a
    `Client` (left open at `close()`). `window` is the time shown, `bar` the bar interval,
    `method` the trade classification (default lee_ready), `interval` the least time
    between redraws (>= 0.1 s). An unknown contract raises `ContractNotFound` and an unreachable
    server `StreamConnectionError`, here in the cell. A live dashboard of the same contract on
    the same server and transport (the cell run before) is closed first, logged at INFO;
    `ibstream.widgets.close_all()` closes them all.

    `history` ("30min"): open with that much of the past drawn (`Client.history`: the
    server's store, else IB's history), then go on live without a seam (`seam.py`); the
    cumulative delta starts at the first tick of it. `window` defaults to 5min, or to
    `history` when that is longer. History IB cannot give is said in the controls' message
    line; the dashboard goes on live.

    `panels`: the figures shown, of "price", "volume", "delta", "buy_pct" (the default) and
    "profile" (the window's volume per price level beside the price chart: buys, sells,
    point of control, value area) and "footprint" (the last bars × price levels: sell × buy
    volume, delta colour, diagonal and stacked imbalances), in that order.
    """
    panels = check_panels(panels)
    span = None if history is None else history_span(history)
    if window is None:
        window = "5min" if span is None or span <= FIVE_MINUTES else history
    window, bar = duration_label(window, "window"), duration_label(bar, "bar")
    method = resolve_method(method)
    if not interval >= MIN_INTERVAL:
        raise ValueError(f"interval must be >= {MIN_INTERVAL} s (10 redraws a second at most)")
    if client is not None and (server is not None or token is not None):
        raise ValueError("pass either client= or server=/token=, not both")
    owns = client is None
    if client is None:
        from ibstream.server.launch import default_url

        client = Client(server or default_url(), transport, token, connect_timeout=5.0)
    live.close_same(live.key(client.server, client.transport, contract))
    try:
        return Dashboard(contract, client, owns, window, bar, method, interval, history, panels)
    except BaseException as exc:
        if owns:
            client.close()
        if isinstance(exc, StreamConnectionError):
            hint = " Start one with ibstream.ensure_server() or `ibstream serve`."
            raise StreamConnectionError(exc.code, exc.message + hint, details=exc.details) from exc
        raise


class Dashboard(widgets.VBox):
    """Status line, controls and figures of one live subscription (see the module doc).

    `ticks`, `trades`, `bars`: the window's frames as of the moment they are read (the ticks
    that arrived are taken in first); `to_frames()` gives all three of one moment."""

    def __init__(
        self,
        contract: str | int,
        client: Client,
        owns_client: bool,
        window: str,
        bar: str,
        method: str,
        interval: float = 0.1,
        history: object = None,
        panels: object = DEFAULT_PANELS,
    ) -> None:
        self._lock = threading.RLock()  # first: Widget.__del__ may close a half-made one
        self.client, self._owns_client = client, owns_client
        self.panels, self.inbox = check_panels(panels), Inbox()
        self.redraws, self.closed, self.paused = 0, False, False
        self._listeners: list[Callable[[], object]] = []
        self._drawn = -1  # model.ticks_fed at the last redraw
        self._trades_seen = 0
        self.history_ticks = 0  # ticks drawn from the history (`history=`)
        self.stream = client.stream(contract, TICK_TYPES, on_tick=self.inbox.put)
        subscribed = time.time()
        self.seam: Seam | None = None  # live ticks the history holds are dropped here
        info = self.stream.contract
        self.key = live.key(client.server, client.transport, contract)
        local = str(info.get("local_symbol") or "").upper()
        self._aliases = {self.key[2], str(info.get("contract_id")), local}
        self.name = info.get("local_symbol") or info.get("symbol") or str(contract)
        self.transport = getattr(client, "transport", "?")
        unit = SIZE_UNITS.get(info.get("sec_type", ""), "contracts")
        self.figures = Figures(
            info.get("currency", ""), unit, info.get("min_tick", 0.01), self.panels
        )
        levels = bool(LEVEL_PANELS.intersection(self.panels))
        self.model = LiveModel(window, bar, method, levels=levels, tick_size=self.figures.min_tick)
        self.controls = Controls(
            window=window,
            bar=bar,
            method=method,
            path=exports.default_file(self.name),
            on_settings=self.configure,
            on_pause=self._set_paused,
            on_frames=lambda: exports.frames_message(self, *map(len, self.to_frames())),
            on_save=self._save_and_say,
        )
        self.status = StatusLine()
        super().__init__([self.status, self.controls, *self.figures.widgets])
        if history is not None:  # subscribed first: the stream's ticks wait in the inbox
            self._load_history(contract, history, subscribed)
        self.add_class("ibstream-dashboard")
        self.ticker = Ticker(self.refresh, interval)
        self.ticker.start()
        live.add(self)

    def serves(self, key: live.Key) -> bool:
        """Whether this live dashboard shows `key` (server, transport, contract as asked)."""
        return not self.closed and self.key[:2] == key[:2] and key[2] in self._aliases

    def refresh(self) -> None:
        """Take the ticks that arrived, update the analytics and, unless paused, redraw."""
        with self._lock:
            if self.closed:
                return
            self._ingest()
            if not self.paused and self._drawn != self.model.ticks_fed:
                self.figures.draw(self.model.plot())
                self._drawn = self.model.ticks_fed
                self.redraws += 1
            self.status.show(self.status_now())
        for listener in list(self._listeners):
            listener()

    def on_refresh(self, callback: Callable[[], object]) -> None:
        """Call `callback()` after every step (redrawn or not), on the stepping thread."""
        self._listeners.append(callback)

    def _load_history(self, contract: str | int, history: object, subscribed: float) -> None:
        """Draw the history up to now; the seam then keeps its ticks out of the live ones.
        IB's history holds only seconds that are over, so it is asked for once the second
        of the subscription is (at most a second's wait): it then reaches into the stream."""
        wait = math.floor(subscribed) + 1 + SECOND_MARGIN - time.time()
        if wait > 0:
            time.sleep(wait)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", HistoryIncompleteWarning)
                frame = self.client.history(contract, TICK_TYPES, start=history)
        except StreamError as exc:
            log.warning("dashboard %s: no history: %s", self.name, exc)
            self.controls.say(f"no history: {exc.message}", error=True)
            return
        self.seam = Seam(frame, frame.attrs["history"]["end_ns"])
        try:
            self._trades_seen += len(self.model.feed(frame))
        except Exception:  # the model kept its window and says why (model.problem)
            self.controls.say(self.model.problem, error=True)
            return
        self.history_ticks = len(frame)
        notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        self.controls.say("; ".join(notes) or f"history: {len(frame):,} ticks", error=bool(notes))

    def _ingest(self) -> None:
        rows = self.inbox.take()
        if rows and self.seam is not None and self.seam.open:
            rows = self.seam.admit(rows)
        if rows:
            try:
                self._trades_seen += len(self.model.feed(rows))
            except Exception:  # the model kept its window and says why (model.problem)
                self.controls.say(self.model.problem)

    def status_now(self) -> Status:
        arrival = self.inbox.last_arrival
        return Status(
            contract=self.name,
            state="closed" if self.closed else self.client.state,
            transport=self.transport,
            ticks=self.inbox.received,
            trades=self._trades_seen,
            last_tick_age=None if arrival is None else time.monotonic() - arrival,
            reconnects=self.client.reconnects,
            gaps=self.client.gaps,
            paused=self.paused,
            dropped=self.inbox.dropped,
            problem=problem(
                self.stream.error,
                self.stream.active or self.closed,
                self.ticker.failures,
                self.model.problem,
            ),
        )

    def configure(
        self, window: object = None, bar: object = None, method: str | None = None
    ) -> str:
        """Change window, bar interval and/or method: the window's ticks are classified
        again and the bars rebuilt (the cumulative delta then starts at the first of them)."""
        c = self.controls
        window = c.window.value if window is None else duration_label(window, "window")
        bar = c.bar.value if bar is None else duration_label(bar, "bar")
        method = resolve_method(method or c.method.value)
        with self._lock:
            self._ingest()
            self.model.configure(window, bar, method)
            self._drawn = -1
        c.show_settings(window, bar, method)
        message = (
            f"window {window}, bars {bar}, {method}: re-classified {self.model.ticks_fed} ticks"
        )
        c.say(message)
        return message

    def pause(self) -> None:
        """Stop redrawing; ticks keep arriving and are analysed, so nothing is lost."""
        self.controls.pause.value = True

    def resume(self) -> None:
        self.controls.pause.value = False

    def _set_paused(self, paused: bool) -> str:
        self.paused = paused
        return "paused: still receiving, not redrawing" if paused else "resumed"

    @property
    def ticks(self) -> pd.DataFrame:
        """The window's ticks now, a tick frame in arrival order."""
        return self._now(self.model.ticks)

    @property
    def trades(self) -> pd.DataFrame:
        """The window's classified trades now."""
        return self._now(self.model.trades)

    @property
    def bars(self) -> pd.DataFrame:
        """The window's bars now (the open bar last)."""
        return self._now(self.model.bars)

    def _now(self, read: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        with self._lock:
            self._ingest()
            return read()

    def to_frames(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """The window's ticks, classified trades and bars, all three of one moment."""
        with self._lock:
            self._ingest()
            return self.model.ticks(), self.model.trades(), self.model.bars()

    def save_parquet(self, path: str | Path | None = None) -> tuple[Path, Path]:
        """Write the window's ticks to `path` (default: the file box's name) and its bars
        to `<stem>.bars.parquet` beside it; returns both paths (see `to_frames`)."""
        return self._save(path)[:2]

    def _save(self, path: str | Path | None) -> tuple[Path, Path, int, int]:
        ticks, _, bars = self.to_frames()
        paths = exports.write_parquet(ticks, bars, path or self.controls.path.value)
        return (*paths, len(ticks), len(bars))

    def _save_and_say(self, path: str | Path | None) -> str:
        return exports.saved_message(*self._save(path))

    def stop(self) -> None:
        """Unsubscribe and stop redrawing (the figures stay as they are). Idempotent."""
        with self._lock:
            if self.closed or not hasattr(self, "ticker"):  # closed, or never finished
                return
            self.closed = True
        live.discard(self)
        self.ticker.stop()
        for what, close in (("stream", self.stream.close), ("client", self.client.close)):
            if what == "client" and not self._owns_client:
                continue
            try:
                close()
            except StreamError as exc:  # the server may be gone already: nothing to undo
                log.info("dashboard %s: closing the %s: %s", self.name, what, exc)
        self.status.show(self.status_now())

    def __del__(self) -> None:
        """Collected (or the process ends) without `close()`: stop stepping, close the
        widget; no network calls here, the client's loop may be gone already."""
        if hasattr(self, "ticker"):
            self.closed = True
            self.ticker.stop(wait=False)
        super().close()

    def close(self) -> None:
        """`stop()`, then remove the dashboard's widgets from the page."""
        self.stop()
        for widget in widget_tree(self):
            widget.close()
        super().close()

    def __repr__(self) -> str:
        return f"<Dashboard {self.name}: {self.status.text}>"
