"""Progress of a collection with tqdm.auto: a widget in Jupyter, a bar in a terminal."""

from __future__ import annotations

from typing import Any


class Progress:
    """Shows ticks so far, elapsed time and rate; does nothing when disabled."""

    def __init__(self, enabled: bool, *, total: int | None, desc: str):
        self._bar: Any = None
        if enabled:
            from tqdm.auto import tqdm  # only when a bar is wanted

            self._bar = tqdm(total=total, desc=desc, unit=" ticks", dynamic_ncols=True)

    def show(self, count: int) -> None:
        if self._bar is not None and count != self._bar.n:
            self._bar.update(count - self._bar.n)

    def close(self, count: int) -> None:
        if self._bar is not None:
            self.show(count)
            self._bar.close()
            self._bar = None
