"""DuckDB over a store: views `ticks` (every tick column plus date, contract_id, tick_type),
`quotes` (bid_ask rows), `trades_raw` (last / all_last rows, unclassified) and `gaps`.

A local store is read by DuckDB's own Parquet reader over the parts' paths (hive
partitioning, so a `WHERE date = ...` or `contract_id = ...` prunes files); an object store
through the pyarrow datasets (DuckDB's httpfs extension may not be installable). Either way
the views list the parts usable when the connection was made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from ibstream.store import catalog, layout
from ibstream.store.errors import StoreError

if TYPE_CHECKING:
    from ibstream.store.reader import Store

_DAY = pa.schema([("date", pa.string())])
_TICKS = (pa.unify_schemas([layout.TICK_SCHEMA, layout.PARTITION_SCHEMA]), layout.PARTITION_SCHEMA)
_GAPS = (pa.unify_schemas([layout.GAP_SCHEMA, _DAY]), _DAY)
_QUOTE_ONLY = "bid_price, bid_size, ask_price, ask_size"
_TRADE_ONLY = "price, size, exchange, conditions"
_DERIVED = f"""
CREATE VIEW quotes AS SELECT * EXCLUDE ({_TRADE_ONLY}, mid_price)
    FROM ticks WHERE tick_type = 'bid_ask';
CREATE VIEW trades_raw AS SELECT * EXCLUDE ({_QUOTE_ONLY}, mid_price)
    FROM ticks WHERE tick_type IN ('last', 'all_last');
"""


def connect(store: Store) -> duckdb.DuckDBPyConnection:
    parts = store.validator.usable(catalog.list_parts(store.root))
    return _connection(store, parts)


def _connection(store: Store, parts: list[catalog.PartFile]) -> duckdb.DuckDBPyConnection:
    gap_files = store.validator.usable(catalog.list_gap_files(store.root))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    _view(con, store.root, "ticks", [p.path for p in parts], _TICKS, layout.TICKS)
    _view(con, store.root, "gaps", [g.path for g in gap_files], _GAPS, layout.GAPS)
    con.execute(_DERIVED)
    return con


def _view(
    con: duckdb.DuckDBPyConnection,
    root: layout.StoreRoot,
    name: str,
    paths: list[str],
    schemas: tuple[pa.Schema, pa.Schema],
    folder: str,
) -> None:
    schema, keys = schemas
    if root.local and paths:
        listed = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
        types = ", ".join(
            f"'{f.name}': {'BIGINT' if pa.types.is_integer(f.type) else 'VARCHAR'}" for f in keys
        )
        source = (
            f"read_parquet([{listed}], hive_partitioning = true, union_by_name = true, "
            f"hive_types = {{{types}}})"
        )
    else:
        source = f"_{name}_arrow"
        if paths:
            con.register(source, _dataset(root, paths, schemas, folder))
        else:
            con.register(source, schema.empty_table())
    con.execute(
        f"CREATE VIEW {name} AS SELECT * REPLACE (CAST(date AS DATE) AS date) FROM {source}"
    )


def _dataset(
    root: layout.StoreRoot, paths: list[str], schemas: tuple[pa.Schema, pa.Schema], folder: str
) -> Any:
    schema, keys = schemas
    return ds.dataset(
        paths,
        schema=schema,
        format="parquet",
        filesystem=root.fs,
        partitioning=ds.partitioning(keys, flavor="hive"),
        partition_base_dir=root.path(folder),
    )


def query(store: Store, text: str) -> pd.DataFrame:
    """Run `text` on one snapshot of the store (again if a compaction raced it)."""
    if not isinstance(text, str) or not text.strip():
        raise StoreError("INVALID_QUERY", f"query must be SQL text; got {text!r}")

    def run(parts: list[catalog.PartFile]) -> pd.DataFrame:
        con = _connection(store, parts)
        try:
            relation = con.sql(text)
            return pd.DataFrame() if relation is None else relation.to_arrow_table().to_pandas()
        except duckdb.IOException:
            raise
        except duckdb.Error as exc:
            if len(store.validator.usable(parts, deep=True)) < len(parts):
                raise _Retry() from exc  # a part that reads as Parquet but not as data
            first = str(exc).strip().splitlines()[0]
            raise StoreError("INVALID_QUERY", f"{first} (query: {text.strip()[:200]})") from None
        finally:
            con.close()

    return store.snapshot(lambda parts: parts, run, retry_on=(duckdb.IOException, _Retry))


class _Retry(Exception):
    """A read to do again without the parts found corrupt."""
