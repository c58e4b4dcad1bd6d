"""Reading a store: `open(DIR)` -> `Store`, whose `.ticks()` is the tick frame of
`Client.collect` (same columns, dtypes and `attrs["contracts"]`), so `classify`, `bars`,
`footprint` and the dashboard take a recorded session as they take a live one.

Every read works on one snapshot of the parts (compaction journals applied, see `catalog`)
and checks afterwards that no part it read was swapped meanwhile; a read that raced a
compaction is done again, so a reader never sees a row twice or an hour half-merged.
Pruning is by path (date, contract_id, tick_type, the name's hour); the time filter goes
down to the Parquet scan.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from itertools import groupby
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from ibstream.model import TickType
from ibstream.store import catalog, layout, specs
from ibstream.store.errors import StoreError
from ibstream.store.frame import frame_from_tables

log = logging.getLogger(__name__)
T = TypeVar("T")
_ATTEMPTS = 5  # reads that raced a compaction, done again before giving up
_ORDER = {t.value: i for i, t in enumerate((TickType.LAST, TickType.ALL_LAST))}  # ties: trades
_SCHEMA = pa.unify_schemas([layout.TICK_SCHEMA, layout.PARTITION_SCHEMA])
_COLUMNS = [
    n for n in _SCHEMA.names if n not in ("date", "server_id", "symbol", "local_symbol", "source")
]
_KEYS = ("contract_id", "tick_type")  # the partition keys: from the paths, not the scan


def open(location: object) -> Store:  # noqa: A001 - `ibstream.store.open(DIR)` reads as meant
    """The recording at `location` (a directory or an `s3://` URI), checked to be one."""
    root = layout.open_root(location)
    catalog.check_root(root)
    return Store(root)


class Store:
    """One recording. Methods read what is on disk at the time they are called."""

    def __init__(self, root: layout.StoreRoot) -> None:
        self.root = root
        self.validator = catalog.Validator(root)

    def __repr__(self) -> str:
        return f"<ibstream.store.Store {self.root.uri}>"

    # -- ticks ---------------------------------------------------------------------------
    def ticks(
        self,
        contract: object = None,
        tick_types: object = None,
        start: object = None,
        end: object = None,
    ) -> pd.DataFrame:
        """The tick frame of the recorded ticks: `contract` a symbol, local symbol or conId
        (or a list; None: all), `tick_types` a name or list (None: all), `start <= time <
        end` (anything pandas reads as a time; naive means UTC). Rows in arrival order."""
        kinds = specs.tick_types(tick_types)
        lo, hi = specs.time_range(start, end)
        infos = self.contract_infos()
        ids = specs.resolve(contract, infos, self.root.uri)

        def pick(parts: list[catalog.PartFile]) -> list[catalog.PartFile]:
            return catalog.select(parts, ids, kinds, lo, hi)

        # no name holds the scan: its buffers go column by column as the frame is written
        frame = frame_from_tables(self.snapshot(pick, lambda parts: self._read(parts, lo, hi)))
        wanted = sorted(infos) if ids is None else ids
        frame.attrs["contracts"] = [infos[i] for i in wanted if i in infos]
        return frame

    def _read(
        self, parts: list[catalog.PartFile], lo: int | None, hi: int | None
    ) -> list[pa.Table]:
        """The parts' rows as tables end to end (`store.frame.frame_from_tables`): a run of
        parts of one stream (contract and tick type) with the same columns in use is one
        scan of those columns only (a stream fills its own tick type's: the others, all
        nulls, are not read at all); its partition keys, one value, come run-end encoded."""
        # trades first, then quotes: the stable sort by time keeps a trade ahead of a quote
        # with the same stamp (only quotes that arrived before a trade prevail for it); a
        # stream's days next to each other (equal stamps share a day: their order is kept)
        parts = sorted(
            parts, key=lambda p: (_ORDER.get(p.tick_type, 9), p.contract_id, p.tick_type, p.path)
        )
        tables = []
        for (columns, *keys), run in groupby(parts, key=self._stream_columns):
            dataset = ds.dataset(
                [p.path for p in run],
                filesystem=self.root.fs,
                partition_base_dir=self.root.path(layout.TICKS),
                **layout.SCAN_OPTIONS,  # text as dictionaries: no string spelled out per row
            )
            table = dataset.to_table(
                columns=list(columns), filter=_time_filter(lo, hi), memory_pool=layout.scan_pool()
            )
            if table.num_rows:
                for name, value in zip(_KEYS, keys, strict=True):
                    ends = pa.array([table.num_rows], pa.int32())
                    ree = pa.RunEndEncodedArray.from_arrays(ends, pa.array([value]))
                    table = table.append_column(name, ree)
                tables.append(table)
        return tables

    def _stream_columns(self, part: catalog.PartFile) -> tuple[tuple[str, ...], int, str]:
        return self._filled(part), part.contract_id, part.tick_type

    def _filled(self, part: catalog.PartFile) -> tuple[str, ...]:
        """The frame's columns that hold a value somewhere in `part`, by its footer's
        statistics (a column without them counts as holding values)."""
        footer = self.validator.footer(part)
        empty = set(_COLUMNS) - {"time"}
        for group in range(footer.num_row_groups):
            row_group = footer.row_group(group)
            for column in range(row_group.num_columns):
                chunk = row_group.column(column)
                stats = chunk.statistics
                if (
                    stats is None
                    or not stats.has_null_count
                    or stats.null_count < row_group.num_rows
                ):
                    empty.discard(chunk.path_in_schema)
        return tuple(n for n in _COLUMNS if n not in empty and n not in _KEYS)

    def trades(
        self, contract: object = None, start: object = None, end: object = None, method: Any = None
    ) -> pd.DataFrame:
        """The recorded trades classified (`ibstream.analytics.classify`, `method` as there:
        Lee-Ready by default) against the recorded quotes."""
        from ibstream import analytics

        try:
            method = analytics.resolve_method(method)
        except ValueError as exc:
            raise StoreError("INVALID_METHOD", str(exc)) from None
        return analytics.classify(self.ticks(contract, None, start, end), method)

    # -- what was recorded --------------------------------------------------------------
    def contract_infos(self) -> dict[int, dict]:
        """conId -> the contract's details as recorded in its parts' metadata."""
        return self.validator.contracts(catalog.list_parts(self.root))

    def contracts(self) -> pd.DataFrame:
        """One row per recorded contract: its details, tick types, first and last day."""
        from ibstream.store import summary

        return summary.contracts(self)

    def sessions(self) -> pd.DataFrame:
        """One row per contract and UTC day: ticks per tick type, first and last tick."""
        from ibstream.store import summary

        return summary.sessions(self)

    def gaps(
        self, contract: object = None, start: object = None, end: object = None
    ) -> pd.DataFrame:
        """What is known to be missing (reason, the run that lost it ...) overlapping
        [start, end), for `contract` (as in `ticks`), in time order."""
        from ibstream.store import summary

        return summary.gaps(self, contract, start, end)

    # -- SQL -----------------------------------------------------------------------------
    def duckdb(self) -> Any:
        """A DuckDB connection with views `ticks`, `quotes`, `trades_raw`, `gaps` over the
        parts on disk now (reopen it to see parts written or compacted later)."""
        from ibstream.store import sql

        return sql.connect(self)

    def sql(self, query: str) -> pd.DataFrame:
        """`query` run by DuckDB over the views of `duckdb()`, as a DataFrame."""
        from ibstream.store import sql

        return sql.query(self, query)

    # -- snapshots -----------------------------------------------------------------------
    def snapshot(
        self,
        pick: Callable[[list[catalog.PartFile]], list[catalog.PartFile]],
        read: Callable[[list[catalog.PartFile]], T],
        retry_on: tuple[type[BaseException], ...] = (),
    ) -> T:
        """`read` of the usable parts `pick` selects, done again while a compaction swapped
        some of them under it (a part gone, or changed, after the read)."""
        for attempt in range(_ATTEMPTS):
            chosen = pick(catalog.list_parts(self.root))
            try:
                result = read(self.validator.usable(chosen))
            except (FileNotFoundError, *retry_on) as exc:
                if attempt == _ATTEMPTS - 1:
                    raise
                log.debug("a part went away during a read (%s); reading again", exc)
                continue
            after = {p.key for p in pick(catalog.list_parts(self.root))}
            if all(p.key in after for p in chosen):
                return result
            log.debug("parts were compacted during a read; reading again")
        raise StoreError(
            "STORE_BUSY",
            f"{self.root.uri} changed under every read; try again",
            store=self.root.uri,
        )


def _time_filter(lo: int | None, hi: int | None) -> ds.Expression | None:
    terms = []
    if lo is not None:
        terms.append(ds.field("time") >= pa.scalar(lo, pa.int64()).cast(layout.TIME))
    if hi is not None:
        terms.append(ds.field("time") < pa.scalar(hi, pa.int64()).cast(layout.TIME))
    return functools.reduce(lambda a, b: a & b, terms) if terms else None
