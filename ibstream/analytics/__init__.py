"""Order-flow analytics on tick frames: pandas in, pandas out, no I/O.

Classification (`classify`, `TradeClassifier`, `METHODS`, `DEFAULT_METHOD`) is imported
here, so `ibstream.analytics.classify` is the function, not its module. The delta, bars,
footprint, order-flow-imbalance and incremental-engine names load lazily from their
submodules on first use: one missing or broken submodule does not take the others down.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ibstream.analytics.classifier import TradeClassifier
from ibstream.analytics.classify import (
    DEFAULT_METHOD,
    METHODS,
    QUOTE_DTYPE,
    QUOTE_STATES,
    SIDE_DTYPE,
    SIDES,
    TRADE_COLUMNS,
    classify,
    classify_with_state,
    empty_trades,
    resolve_method,
)

__all__ = [  # the lazily found names of the other submodules come on top
    "DEFAULT_METHOD",
    "METHODS",
    "QUOTE_DTYPE",
    "QUOTE_STATES",
    "SIDE_DTYPE",
    "SIDES",
    "TRADE_COLUMNS",
    "TradeClassifier",
    "classify",
    "classify_with_state",
    "empty_trades",
    "resolve_method",
]
_OTHERS = ("delta", "bars", "footprint", "ofi", "engine")  # their public names, found on demand


def _submodule(name: str) -> ModuleType | Exception | None:
    """The submodule; None if it does not exist; the error if importing it fails."""
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        return None if exc.name == f"{__name__}.{name}" else exc
    except Exception as exc:  # a broken module must not hide the others
        return exc


def _public(module: ModuleType) -> list[str]:
    """A submodule's `__all__`, else the functions and classes it defines."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    own = module.__name__
    return [
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and getattr(v, "__module__", None) == own
    ]


def __getattr__(name: str) -> object:
    failed: list[str] = []
    if not name.startswith("_"):
        for sub in _OTHERS:
            module = _submodule(sub)
            if isinstance(module, Exception):
                failed.append(f"{__name__}.{sub} failed to import: {module!r}")
            elif module is not None and name in _public(module):
                value = getattr(module, name)
                globals()[name] = value
                return value
    raise AttributeError(
        f"module {__name__!r} has no attribute {name!r}" + "".join(f"; {f}" for f in failed)
    )


def __dir__() -> list[str]:
    modules = [_submodule(sub) for sub in _OTHERS]
    found = [n for m in modules if isinstance(m, ModuleType) for n in _public(m)]
    return sorted({*__all__, *found})
