"""The live dashboard for Jupyter (`dashboard`), on ipywidgets and bqplot.

Importing this package imports neither: `dashboard` and `Dashboard` (module `board`: a
module named as the function would shadow it) load them when first asked for, and
`ibstream.widgets.model` (the data side) needs only pandas and numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ibstream.widgets.board import Dashboard, dashboard
    from ibstream.widgets.live import close_all
    from ibstream.widgets.model import LiveModel

__all__ = ["Dashboard", "LiveModel", "close_all", "dashboard"]

_HOMES = {
    "Dashboard": "ibstream.widgets.board",
    "dashboard": "ibstream.widgets.board",
    "LiveModel": "ibstream.widgets.model",
    "close_all": "ibstream.widgets.live",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'ibstream.widgets' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(home), name)
