"""The one import seam for the IB client library: ib_insync (default) or ib_async.

ib_async is the maintained fork with the same API; choose it with `IBSTREAM_IB_LIB=ib_async`
or `load("ib_async")`. Nothing else in ibstream imports either library directly.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

SUPPORTED = ("ib_insync", "ib_async")


def load(name: str | None = None) -> ModuleType:
    """Import and return the chosen library module (`IB`, `Contract`, tick classes ...)."""
    name = name or os.environ.get("IBSTREAM_IB_LIB", "ib_insync")
    if name not in SUPPORTED:
        raise ValueError(f"IB library must be one of {SUPPORTED}, not {name!r}")
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"{name} is not installed: pip install {name}") from exc
