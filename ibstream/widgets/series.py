"""Bounded stores behind the live plots: time buckets for the lines and bubbles, and the
recent batches of ticks and trades for export and re-classification.

What a redraw sends is the buckets: at most `points` per series whatever the tick rate, so
a busy market costs the page no more than a quiet one. Each add costs O(batch + buckets).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np


class Buckets:
    """Values per time bucket (`width_ns` wide, epoch-aligned) over the last `span_ns`:
    `sums` add up within a bucket, `lasts` keep the bucket's last value; `time` is the
    stamp of each bucket's last row. Stamps that go back join the newest bucket."""

    def __init__(
        self, width_ns: int, span_ns: int, sums: Iterable[str] = (), lasts: Iterable[str] = ()
    ) -> None:
        if width_ns < 1 or span_ns < width_ns:
            raise ValueError(f"need 1 <= width_ns <= span_ns, got {width_ns}, {span_ns}")
        self.width_ns, self.span_ns = int(width_ns), int(span_ns)
        self.sums, self.lasts = tuple(sums), tuple(lasts)
        self.key = np.zeros(0, np.int64)
        self.time = np.zeros(0, np.int64)
        self.values = {name: np.zeros(0) for name in (*self.sums, *self.lasts)}

    def __len__(self) -> int:
        return len(self.key)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    def add(self, time: np.ndarray, **values: np.ndarray) -> None:
        """Add rows (stamps in ns and one array per value name) in arrival order."""
        if not len(time):
            return
        time = np.asarray(time, np.int64)
        merged = len(self.key) > 0
        if merged:  # the newest bucket may still fill: redo it with the new rows
            time = np.maximum.accumulate(np.concatenate([self.time[-1:], time]))
            values = {k: np.concatenate([self.values[k][-1:], values[k]]) for k in self.values}
        else:
            time = np.maximum.accumulate(time)
        key = time // self.width_ns
        starts = np.flatnonzero(np.diff(key, prepend=key[0] - 1))
        ends = np.append(starts[1:], len(key)) - 1
        new = {k: np.add.reduceat(np.asarray(values[k], np.float64), starts) for k in self.sums}
        new |= {k: np.asarray(values[k], np.float64)[ends] for k in self.lasts}
        keep = len(self.key) - merged
        self.key = np.concatenate([self.key[:keep], key[ends]])
        self.time = np.concatenate([self.time[:keep], time[ends]])
        self.values = {k: np.concatenate([self.values[k][:keep], new[k]]) for k in self.values}
        oldest = (self.time[-1] - self.span_ns) // self.width_ns
        if self.key[0] <= oldest:
            first = int(np.searchsorted(self.key, oldest, side="right"))
            self.key, self.time = self.key[first:], self.time[first:]
            self.values = {k: v[first:] for k, v in self.values.items()}


class Recent:
    """The batches of the last `span_ns` (by their stamps) and at most `max_rows` rows,
    whole; `items()` may hold up to `join` batches more, for the caller to trim. Every
    `join` new batches are joined into one with `merge`, so that a window of thousands of
    small batches reads back at the cost of a few dozen."""

    def __init__(
        self,
        span_ns: int,
        max_rows: int,
        merge: Callable[[list[Any]], Any] | None = None,
        join: int = 50,
    ) -> None:
        self.span_ns, self.max_rows = int(span_ns), int(max_rows)
        self.merge, self.join = merge, join
        self._batches: deque[tuple[np.ndarray, Any]] = deque()
        self._fresh = 0  # batches at the end not joined yet
        self.rows = 0

    def add(self, time: np.ndarray, item: Any) -> None:
        if not len(time):
            return
        self._batches.append((time, item))
        self.rows += len(time)
        self._fresh += 1
        if self.merge is not None and self._fresh >= self.join:
            parts = [self._batches.pop() for _ in range(self._fresh)][::-1]
            joined = np.concatenate([t for t, _ in parts])
            self._batches.append((joined, self.merge([i for _, i in parts])))
            self._fresh = 0
        cutoff = int(time.max()) - self.span_ns
        batches = self._batches
        while len(batches) > 1 and (
            batches[0][0].max() < cutoff or self.rows - len(batches[0][0]) >= self.max_rows
        ):
            self.rows -= len(batches.popleft()[0])
            self._fresh = min(self._fresh, len(batches))

    def items(self) -> list[Any]:
        return [item for _, item in self._batches]
