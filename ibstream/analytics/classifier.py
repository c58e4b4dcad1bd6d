"""Incremental trade classification: feed ticks as they arrive, get each trade classified once.

`TradeClassifier` carries per contract the state the previous batches left (last quote,
last trade price, last price-change direction, last receive time, whether its all_last
trades have begun), so any split of a tick sequence into batches gives exactly the rows
`classify` gives on the whole sequence. Frames go through the vectorised `classify`; wire
rows (tick `data` dicts) through the per-tick path of `live`, which costs microseconds
rather than a millisecond per batch. Both read and leave the same state.

`lookahead` holds each trade back until its contract's next quote (or the timeout) decides
it (see `live`), so `update` returns the trades decided by the batch, which may include
earlier batches' trades; frames go through the per-tick path. `release` hands over the
waiting trades whose timeout has passed by the wall clock, `flush` all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

import pandas as pd

from ibstream.analytics.classify import classify_with_state, resolve_method
from ibstream.analytics.live import (
    Carried,
    Trade,
    books_frame,
    classify_rows,
    frame_books,
    frame_rows,
    release,
    trades_frame,
)
from ibstream.analytics.lookahead import LOOKAHEAD, LOOKAHEAD_TIMEOUT, timeout_nanos


class TradeClassifier:
    """Classifies the trades of tick batches (frames or wire rows) in arrival order."""

    def __init__(self, method: str | None = None, timeout: object = LOOKAHEAD_TIMEOUT) -> None:
        self.method = resolve_method(method)
        self.timeout = timeout  # lookahead: the longest wait for a contract's next quote
        self._wait = timeout_nanos(timeout)
        self._books: dict[int, Carried] = {}  # the state, unless `_frame` holds it
        self._frame: pd.DataFrame | None = None
        self.trades_seen = 0

    def update(
        self,
        ticks: pd.DataFrame | Mapping | Iterable[Mapping],
        accept: Callable[[pd.DataFrame], None] | None = None,
    ) -> pd.DataFrame:
        """Classify the trades among `ticks` (a tick frame, one tick `data` dict as on the
        wire, or a list of them); returns just these trades as a trades frame. `accept` is
        called with them before the classifier moves on: if it raises, the batch is undone.
        Receive times that go back (within a contract, or before the last batch's) raise
        ValueError and change nothing. For `lookahead`: the trades this batch decides."""
        if isinstance(ticks, pd.DataFrame) and self.method == LOOKAHEAD:
            if "tick_type" not in ticks.columns:
                classify_with_state(ticks, self.method)  # raises the frame's error
            ticks = frame_rows(ticks)
        if not isinstance(ticks, pd.DataFrame):
            frames: list[pd.DataFrame] = []

            def take(records: list[Trade]) -> None:
                frames.append(trades_frame(records))
                if accept is not None:
                    accept(frames[0])

            self.classify_rows(ticks, take)
            return frames[0]
        state = self._state_frame()
        trades, state = classify_with_state(ticks, self.method, state)
        if accept is not None:
            accept(trades)
        self._frame, self._books = state, {}
        self.trades_seen += len(trades)
        return trades

    def classify_rows(
        self,
        rows: Mapping | Iterable[Mapping],
        accept: Callable[[list[Trade]], None] | None = None,
    ) -> list[Trade]:
        """`update` of wire rows without pandas: the trades as `Trade` records (the live
        path; a few microseconds a tick)."""
        rows = (rows,) if isinstance(rows, Mapping) else rows
        if self._frame is not None:
            self._books, self._frame = frame_books(self._frame), None
        trades, touched = classify_rows(rows, self._books, self.method, self._wait)
        if accept is not None:
            accept(trades)
        self._books.update(touched)
        self.trades_seen += len(trades)
        return trades

    @property
    def pending(self) -> int:
        """How many trades wait for their contract's next quote (`lookahead` only)."""
        return sum(len(book.pending) for book in self._books.values())

    def release(
        self, now: int | None = None, accept: Callable[[list[Trade]], None] | None = None
    ) -> list[Trade]:
        """The waiting trades received more than the timeout before `now` (ns since the
        epoch, UTC; None: the wall clock), decided by Lee-Ready, as `Trade` records. Call
        it on a timer when a contract may fall quiet; it can give another side than a batch
        `classify` would, if that contract's next quote was only late."""
        now = time.time_ns() if now is None else now
        return self._release(now - self._wait, accept)

    def flush(self, accept: Callable[[list[Trade]], None] | None = None) -> list[Trade]:
        """Every waiting trade, decided by Lee-Ready: what `classify` gives a trade without
        a next quote (at the end of a feed, or before a pause)."""
        return self._release(None, accept)

    def _release(self, before: int | None, accept: Callable | None) -> list[Trade]:
        books = {c: book.copy() for c, book in self._books.items() if book.pending}
        trades = release(books, before)
        if accept is not None:
            accept(trades)
        self._books.update(books)
        self.trades_seen += len(trades)
        return trades

    @property
    def state(self) -> pd.DataFrame:
        """Per contract: last bid/ask, last trade price, last nonzero price change (+1/-1),
        last receive time (ns), whether its all_last trades have begun."""
        return self._state_frame().copy()

    def _state_frame(self) -> pd.DataFrame:
        return self._frame if self._frame is not None else books_frame(self._books)

    def reset(self) -> None:
        """Forget every contract's quote and price history."""
        self._books, self._frame, self.trades_seen = {}, None, 0
