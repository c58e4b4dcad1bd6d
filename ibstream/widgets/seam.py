"""The join between a dashboard's history and its live stream: no tick twice, none lost.

The dashboard subscribes first (its ticks wait in the inbox), then asks for the history of
the window up to the server's now `E`, draws it at once and goes on with the live ticks.
IB's history holds only the seconds that are over (the server never asks IB for its current
second), so the dashboard asks once the second it subscribed in is over: the history then
reaches past the stream's first tick, and no tick of that second falls between the two.
Both hold the ticks the server received between the subscription and `E`. Rather than
holding the history back until the stream has passed `E` (a quiet market would leave the
chart empty), the history is drawn whole and `Seam.admit` drops from the live rows those
the history already holds:

- a stored tick (sequence > 0: recorded from the same live stream) is the live tick with
  the same tick type and server receive stamp `recv_ns`, exactly;
- a tick the server fetched from IB (sequence 0, receive stamp synthesized) is a live tick
  of the same tick type, IB second and fields (price and size; the four quote fields; the
  midpoint), counted per key (a multiset), so two equal trades in one second are each
  dropped only as often as the history holds them.

The live rows that stay are all later than the history (the history holds every tick up
to `E`; one connection delivers in the server's order), so feeding history then live keeps
arrival order. Once a live row is past both `E` and the history's last IB second of its
tick type, no later row can be in the history and the seam lets everything through.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ibstream.store.columns import CARRIED

NS = 1_000_000_000
FIELDS = CARRIED  # the fields a tick of each type fills


def history_span(history: object) -> int:
    """`dashboard(history=...)`: a positive duration ('30min', a timedelta) in ns."""
    from ibstream.client.history_args import duration

    span = duration("history", history)
    if span is None:
        raise ValueError(f"history must be a duration such as '30min'; got {history!r}")
    return span


def _value(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return None if number != number else number


class Seam:
    """Drops from live rows (wire tick dicts) the ticks of `history` (a tick frame) whose
    answer ended at `end_ns` on the server's clock. Only the history's tail can meet the
    stream, so the keys are built at the first live rows, from the ticks from there on
    (stored: received at or after the first live tick; fetched: its IB second or later, less
    `SLACK_SECONDS` for quotes and trades whose IB seconds interleave)."""

    SLACK_SECONDS = 2

    def __init__(self, history: pd.DataFrame, end_ns: int) -> None:
        self.end_ns = end_ns
        self.dropped = 0
        self._history: pd.DataFrame | None = history
        self._stamps: set[tuple[str, int]] = set()
        self._keys: Counter = Counter()
        self._last_second: dict[str, int] = {}
        self.open = len(history) > 0

    def _index(self, rows: Sequence[Mapping]) -> None:
        """The keys of the history's ticks the stream, starting with `rows`, may hold."""
        history, self._history = self._history, None
        assert history is not None
        first_recv = min(int(row.get("recv_ns") or 0) for row in rows)
        seconds_seen = [int(row["ib_time"]) for row in rows if row.get("ib_time") is not None]
        first_second = min(seconds_seen, default=0) - self.SLACK_SECONDS
        kinds = history["tick_type"].astype(str).to_numpy()
        stamps = history.index.as_unit("ns").asi8
        stored = history["sequence"].to_numpy() > 0
        tail = stored & (stamps >= first_recv)
        self._stamps = set(zip(kinds[tail].tolist(), stamps[tail].tolist(), strict=True))
        ib_ns = history["ib_time"].to_numpy("datetime64[ns]").view(np.int64)
        seconds = np.where(history["ib_time"].notna().to_numpy(), ib_ns // NS, -1)
        for kind in set(kinds[~stored].tolist()):
            mine = ~stored & (kinds == kind)
            self._last_second[kind] = int(seconds[mine].max())
            mine &= seconds >= first_second
            values = [history[name].to_numpy()[mine].tolist() for name in FIELDS[kind]]
            self._keys.update(
                (kind, s, *map(_value, fields))
                for s, *fields in zip(seconds[mine].tolist(), *values, strict=True)
            )

    def admit(self, rows: Sequence[Mapping]) -> list[Mapping]:
        """The rows the history does not hold, in their order."""
        if not self.open or not rows:
            return list(rows)
        if self._history is not None:
            self._index(rows)
        kept = []
        for i, row in enumerate(rows):
            if self._held(row):
                self.dropped += 1
                continue
            kept.append(row)
            if self._past(row):  # everything from here on is newer than the history
                self.open = False
                return kept + list(rows[i + 1 :])
        return kept

    def _held(self, row: Mapping) -> bool:
        kind = str(row.get("tick_type"))
        if (kind, row.get("recv_ns")) in self._stamps:
            self._stamps.discard((kind, row.get("recv_ns")))
            return True
        ib_time = row.get("ib_time")
        if ib_time is None or not self._keys:
            return False
        key = (kind, int(ib_time), *(_value(row.get(name)) for name in FIELDS.get(kind, ())))
        if self._keys.get(key, 0) > 0:
            self._keys[key] -= 1
            return True
        return False

    def _past(self, row: Mapping) -> bool:
        if int(row.get("recv_ns") or 0) <= self.end_ns:
            return False
        ib_time = row.get("ib_time")
        return all(ib_time is not None and int(ib_time) > s for s in self._last_second.values())
