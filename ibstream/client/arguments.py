"""Checks of the public client API's arguments: each error names the argument, what it
accepts and what it got, as a TypeError (wrong kind of value) or ValueError (out of range).

`collect(seconds="10")` should say so, not fail deep inside with a comparison between str
and int.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from numbers import Integral, Real
from typing import Any, TypeVar

T = TypeVar("T")


def _got(value: object) -> str:
    return f"got {value!r} ({type(value).__name__})"


def maybe(check: Callable[[str, object], T], name: str, value: object) -> T | None:
    """None, or what `check` makes of the value."""
    return None if value is None else check(name, value)


def number(name: str, value: object) -> float:
    """A positive, finite number (int or float, not bool)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a positive number; {_got(value)}")
    if not 0 < float(value) < math.inf:
        raise ValueError(f"{name} must be a positive, finite number; {_got(value)}")
    return float(value)


def count(name: str, value: object) -> int:
    """A positive integer (not bool)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be a positive integer; {_got(value)}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer; {_got(value)}")
    return int(value)


def text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string; {_got(value)}")
    return value


def choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        kind = ValueError if isinstance(value, str) else TypeError
        raise kind(f"{name} must be one of {', '.join(map(repr, choices))}; {_got(value)}")
    return value


def callback(name: str, value: object, *, optional: bool = True) -> Callable[..., Any] | None:
    if (value is not None or not optional) and not callable(value):
        raise TypeError(
            f"{name} must be a function{' (or None)' if optional else ''}; {_got(value)}"
        )
    return value  # type: ignore[return-value]


def tick_types(value: object) -> Any:
    """A tick type name or a list (tuple ...) of them; the names are checked by TickType."""
    if isinstance(value, str) or (
        isinstance(value, Iterable) and not isinstance(value, bytes | Mapping)
    ):
        return value if isinstance(value, str | list | tuple) else list(value)
    raise TypeError(
        "tick_types must be a tick type or a list of them, e.g. ('bid_ask', 'last'); " + _got(value)
    )


def instance(name: str, value: object, kind: type, what: str) -> Any:
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{name} must be {what} (or None); {_got(value)}")
    return value
