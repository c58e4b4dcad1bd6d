"""Progress of a collection with tqdm.auto: a widget in Jupyter, a bar in a terminal.

`progress="auto"` (the default) shows a bar only where a person watches: inside an IPython
kernel or shell, or when stderr is a terminal. A script whose stderr goes to a log file or a
pipe gets no bar lines in its log; `True` forces a bar, `False` never shows one.
"""

from __future__ import annotations

import sys
from typing import Any, Literal

ProgressOption = bool | Literal["auto"]


def check_progress(progress: object) -> ProgressOption:
    if isinstance(progress, bool) or progress == "auto":
        return progress  # type: ignore[return-value]
    raise TypeError(f"progress must be True, False or 'auto'; got {progress!r}")


def someone_watches() -> bool:
    """An IPython kernel or shell, or a terminal on stderr."""
    ipython = sys.modules.get("IPython")
    if ipython is not None and getattr(ipython, "get_ipython", lambda: None)() is not None:
        return True
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def wanted(progress: ProgressOption) -> bool:
    return someone_watches() if progress == "auto" else bool(progress)


class Progress:
    """Shows ticks so far, elapsed time and rate; does nothing when disabled."""

    def __init__(
        self,
        progress: ProgressOption,
        *,
        total: int | None,
        desc: str,
        unit: str = " ticks",
        delay: float = 0.0,
    ):
        """`delay`: seconds before the bar first shows (a quick answer shows none)."""
        self._bar: Any = None
        self.enabled = wanted(progress)
        if self.enabled:
            from tqdm.auto import tqdm  # only when a bar is wanted

            self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, delay=delay)

    def show(self, count: int) -> None:
        if self._bar is not None and count != self._bar.n:
            self._bar.update(count - self._bar.n)

    def note(self, text: str) -> None:
        """A short text after the counts (e.g. the ticks so far of a bar counting seconds)."""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def close(self, count: int) -> None:
        if self._bar is not None:
            self.show(count)
            self._bar.close()
            self._bar = None
