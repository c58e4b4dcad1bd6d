"""ibstream: live Interactive Brokers tick-by-tick data over SSE and WebSocket, with
order-flow analytics for pandas and Jupyter.

    import ibstream
    with ibstream.Client("http://127.0.0.1:8001") as client:
        ticks = client.collect("ES", seconds=60)        # a pandas DataFrame, one row per tick
    trades = ibstream.classify(ticks)                   # side of every trade
    ibstream.analytics.bars(trades, "1min")             # buy / sell volume and delta per bar

The import stays light: the client, pandas and the analytics load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ibstream.errors import (
    ContractNotFound,
    ErrorCode,
    InvalidMessage,
    InvalidTickType,
    PermissionDenied,
    RateLimitExceeded,
    SlowConsumer,
    StreamConnectionError,
    StreamError,
    StreamTimeout,
)
from ibstream.model import ContractInfo, Tick, TickType

if TYPE_CHECKING:
    from ibstream import analytics
    from ibstream.analytics import DeltaEngine, TradeClassifier, classify
    from ibstream.client import AsyncClient, Client, TickBuffer
    from ibstream.client.frames import ticks_to_frame
    from ibstream.server.launch import ensure_server
    from ibstream.widgets import dashboard

__version__ = "0.1.0"

# public name -> module that defines it, imported when first asked for
_LAZY = {
    "AsyncClient": "ibstream.client",
    "Client": "ibstream.client",
    "TickBuffer": "ibstream.client",
    "ticks_to_frame": "ibstream.client.frames",
    "classify": "ibstream.analytics",
    "DeltaEngine": "ibstream.analytics",
    "TradeClassifier": "ibstream.analytics",
    "ensure_server": "ibstream.server.launch",
    "dashboard": "ibstream.widgets",
}

__all__ = [
    "AsyncClient",
    "Client",
    "ContractInfo",
    "ContractNotFound",
    "DeltaEngine",
    "ErrorCode",
    "InvalidMessage",
    "InvalidTickType",
    "PermissionDenied",
    "RateLimitExceeded",
    "SlowConsumer",
    "StreamConnectionError",
    "StreamError",
    "StreamTimeout",
    "Tick",
    "TickBuffer",
    "TickType",
    "TradeClassifier",
    "analytics",
    "classify",
    "dashboard",
    "ensure_server",
    "ticks_to_frame",
]


def __getattr__(name: str) -> Any:
    if name == "analytics":
        return importlib.import_module("ibstream.analytics")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ibstream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    """Only the public API (tab completion in a notebook), not the module's own imports."""
    return sorted([*__all__, "__version__"])
