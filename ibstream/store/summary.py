"""What a store holds, mostly from Parquet footers (row counts, time statistics, the
contract in the key-value metadata): listing a month of ticks reads no tick."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import pyarrow.dataset as ds

from ibstream.model import TickType
from ibstream.store import catalog, layout
from ibstream.store import gaps as gap_rows

if TYPE_CHECKING:
    from ibstream.store.reader import Store

KINDS = [t.value for t in TickType]
SESSION_COLUMNS = [
    "date",
    "contract_id",
    "symbol",
    "local_symbol",
    "ticks",
    *(f"ticks_{k}" for k in KINDS),
    "first_tick",
    "last_tick",
]


def part_stats(store: Store, parts: list[catalog.PartFile]) -> pd.DataFrame:
    """One row per part: its partition, rows and first / last receive time (footers only)."""
    rows = []
    for part in parts:
        footer = store.validator.footer(part)
        lo, hi = _time_bounds(footer)
        rows.append((part.day, part.contract_id, part.tick_type, footer.num_rows, lo, hi))
    frame = pd.DataFrame(
        rows, columns=["date", "contract_id", "tick_type", "rows", "first_ns", "last_ns"]
    )
    return frame.astype({"rows": "int64", "first_ns": "int64", "last_ns": "int64"})


def _time_bounds(footer: object) -> tuple[int, int]:
    index = footer.schema.to_arrow_schema().get_field_index("time")
    lows, highs = [], []
    for i in range(footer.num_row_groups):
        group = footer.row_group(i)
        stats = group.column(index).statistics
        if group.num_rows and stats is not None and stats.has_min_max:
            lows.append(stats.min_raw)
            highs.append(stats.max_raw)
    return (min(lows), max(highs)) if lows else (0, 0)


def sessions(store: Store) -> pd.DataFrame:
    """One row per contract and UTC day: ticks in all and per tick type, first and last."""
    parts = store.validator.usable(catalog.list_parts(store.root))
    infos = store.validator.contracts(parts)
    stats = part_stats(store, parts)
    if stats.empty:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in SESSION_COLUMNS})
    keys = ["date", "contract_id"]
    counts = stats.pivot_table(
        index=keys, columns="tick_type", values="rows", aggfunc="sum", fill_value=0
    ).reindex(columns=KINDS, fill_value=0)
    counts.columns = [f"ticks_{k}" for k in KINDS]
    spans = stats.groupby(keys).agg(first_ns=("first_ns", "min"), last_ns=("last_ns", "max"))
    out = counts.join(spans).reset_index()
    out["ticks"] = out[[f"ticks_{k}" for k in KINDS]].sum(axis=1)
    out["symbol"] = [infos.get(i, {}).get("symbol") for i in out["contract_id"]]
    out["local_symbol"] = [infos.get(i, {}).get("local_symbol") for i in out["contract_id"]]
    out["first_tick"] = pd.to_datetime(out.pop("first_ns"), utc=True)
    out["last_tick"] = pd.to_datetime(out.pop("last_ns"), utc=True)
    return out[SESSION_COLUMNS].astype({"symbol": "string", "local_symbol": "string"})


def _dtype(column: str) -> str:
    if column.startswith("ticks") or column == "contract_id":
        return "int64"
    return "datetime64[ns, UTC]" if column.endswith("_tick") else "string"


def contracts(store: Store) -> pd.DataFrame:
    """One row per recorded contract: its recorded details, tick types, days and ticks."""
    parts = store.validator.usable(catalog.list_parts(store.root))
    infos = store.validator.contracts(parts)
    rows = []
    for contract_id, info in infos.items():
        mine = [p for p in parts if p.contract_id == contract_id]
        days = sorted({p.day for p in mine})
        rows.append(
            {
                **info,
                "tick_types": ",".join(sorted({p.tick_type for p in mine})),
                "first_date": days[0],
                "last_date": days[-1],
                "ticks": sum(store.validator.footer(p).num_rows for p in mine),
            }
        )
    lead = ["contract_id", "symbol", "local_symbol", "sec_type", "exchange", "currency"]
    frame = pd.DataFrame(rows)
    for name in lead:
        if name not in frame:
            frame[name] = pd.Series(dtype="object")
    return frame[lead + [c for c in frame.columns if c not in lead]]


def gaps(store: Store, contract: object, start: object, end: object) -> pd.DataFrame:
    """Gap rows for `contract` overlapping [start, end), in time order."""
    from ibstream.store.specs import resolve, time_range

    lo, hi = time_range(start, end)
    ids = resolve(contract, store.contract_infos(), store.root.uri)
    files = store.validator.usable(catalog.list_gap_files(store.root))
    table = layout.GAP_SCHEMA.empty_table()
    if files:
        dataset = ds.dataset(
            [f.path for f in files],
            schema=layout.GAP_SCHEMA,
            format="parquet",
            filesystem=store.root.fs,
        )
        table = gap_rows.latest(dataset.to_table())  # each gap at its latest status
    frame = table.to_pandas()
    keep = pd.Series(True, index=frame.index)
    if ids is not None:
        keep &= frame["contract_id"].isin(ids)
    if lo is not None:
        keep &= frame["end"] >= pd.Timestamp(lo, tz="UTC")
    if hi is not None:
        keep &= frame["start"] < pd.Timestamp(hi, tz="UTC")
    out = frame[keep].sort_values(["start", "contract_id"], kind="stable")
    return out.reset_index(drop=True)


__all__ = ["contracts", "gaps", "part_stats", "sessions"]
