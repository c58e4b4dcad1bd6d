"""The tick store: what the server recorded, as hive-partitioned Parquet (see `layout`).

`open(DIR)` -> `Store` (ticks, trades, gaps, contracts, sessions, sql); `duckdb(DIR)` -> a
DuckDB connection with the views `ticks`, `quotes`, `trades_raw`, `gaps`. The reader (pandas,
DuckDB) loads on first use, so the recorder imports none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ibstream.store.errors import CorruptPartWarning, StoreError
    from ibstream.store.reader import Store, open

__all__ = ["CorruptPartWarning", "Store", "StoreError", "duckdb", "open"]


def duckdb(location: object) -> Any:
    """The DuckDB connection over the recording at `location` (see `Store.duckdb`)."""
    from ibstream.store.reader import open as open_store

    return open_store(location).duckdb()


def __getattr__(name: str) -> Any:
    if name in ("open", "Store"):
        from ibstream.store import reader

        return getattr(reader, name)
    if name in ("StoreError", "CorruptPartWarning"):
        from ibstream.store import errors

        return getattr(errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
