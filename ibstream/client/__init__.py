"""The research client: `Client` (sync: scripts, Jupyter) and `AsyncClient` (asyncio).

Importing this package stays light: pandas is imported only when a frame is built, and the
transports only when a client connects.
"""

from __future__ import annotations

from typing import Any

from ibstream.client.aio import AsyncClient
from ibstream.client.events import ClientState, ErrorEvent, Gap, Info, StateChange
from ibstream.client.options import Backoff
from ibstream.client.stream import AsyncStream
from ibstream.client.sync import Client, SyncStream

__all__ = [
    "AsyncClient",
    "AsyncStream",
    "Backoff",
    "Client",
    "ClientState",
    "ErrorEvent",
    "Gap",
    "HistoryEmptyWarning",
    "HistoryIncompleteWarning",
    "Info",
    "StateChange",
    "SyncStream",
    "TickBuffer",
]


def __getattr__(name: str) -> Any:
    if name == "TickBuffer":  # imports pandas: only when asked for
        from ibstream.client.buffer import TickBuffer

        return TickBuffer
    if name in ("HistoryIncompleteWarning", "HistoryEmptyWarning"):  # with pyarrow: on demand
        from ibstream.client import history

        return getattr(history, name)
    raise AttributeError(f"module 'ibstream.client' has no attribute {name!r}")
