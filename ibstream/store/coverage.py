"""What a store can answer of a history request, and its ticks in slices.

A stream (contract, tick type) is held from its first to its last live tick of each recording
run (`server_id`) and over its `filled` gaps (between runs too: a restart's), minus the gaps
whose latest status is not `filled` (a gap runs from the last tick before the hole to where
ticks came again, both outside it). Everything else of a requested range is a hole, asked
of IB. Times are receive stamps in ns; intervals half-open.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as ds

from ibstream.store import catalog, gaps, layout

Interval = tuple[int, int]
FIELDS = ("price", "size", "bid_price", "bid_size", "ask_price", "ask_size", "mid_price")
DAY_NS = 86_400 * 1_000_000_000
# a run is looked for this far around a window (a run silent longer shows as a hole there)
RUN_REACH_NS = DAY_NS


def stream_parts(root: layout.StoreRoot, contract_id: int, tick_type: str) -> list:
    """The stream's visible parts (compaction journals applied), listed once per request."""
    if not _exists(root, layout.TICKS):
        return []
    return catalog.select(catalog.list_parts(root), [contract_id], [tick_type])


def _dataset(root: layout.StoreRoot, parts: list, lo: int, hi: int) -> ds.Dataset | None:
    """The parts that can hold ticks received in [lo, hi] (pruned by day and hour)."""
    chosen = catalog.select(parts, start_ns=lo, end_ns=hi)
    if not chosen:
        return None
    paths = [p.path for p in chosen]
    return ds.dataset(paths, filesystem=root.fs, format="parquet", schema=layout.TICK_SCHEMA)


def _union(spans: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for lo, hi in sorted(s for s in spans if s[0] < s[1]):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _minus(spans: list[Interval], cuts: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for lo, hi in spans:
        for c_lo, c_hi in cuts:
            if c_hi <= lo or c_lo >= hi:
                continue
            if c_lo > lo:
                out.append((lo, c_lo))
            lo = max(lo, c_hi)
            if lo >= hi:
                break
        if lo < hi:
            out.append((lo, hi))
    return out


def _stream_filter(contract_id: int, tick_type: str) -> ds.Expression:
    return (ds.field("contract_id") == contract_id) & (ds.field("tick_type") == tick_type)


def _between(lo: int, hi: int) -> ds.Expression:
    return (ds.field("time") >= pa.scalar(lo, layout.TIME)) & (
        ds.field("time") < pa.scalar(hi, layout.TIME)
    )


def _exists(root: layout.StoreRoot, name: str) -> bool:
    return root.fs.get_file_info(root.path(name)).type.name != "NotFound"


def runs(root: layout.StoreRoot, parts: list, start: int, end: int) -> list[Interval]:
    """[first, last + 1) of a stream's live ticks per recording run within RUN_REACH_NS of
    [start, end), merged; read in batches of two columns, so memory stays bounded."""
    dataset = _dataset(root, parts, start - RUN_REACH_NS, end + RUN_REACH_NS)
    if dataset is None:
        return []
    where = (ds.field("source") == "live") & _between(start - RUN_REACH_NS, end + RUN_REACH_NS)
    bounds: dict[str, Interval] = {}
    for batch in dataset.scanner(columns=["time", "server_id"], filter=where).to_batches():
        if not batch.num_rows:
            continue
        table = pa.Table.from_batches([batch]).group_by("server_id")
        for row in table.aggregate([("time", "min"), ("time", "max")]).to_pylist():
            lo, hi = row["time_min"].value, row["time_max"].value + 1
            old = bounds.get(row["server_id"])
            bounds[row["server_id"]] = (min(lo, old[0]), max(hi, old[1])) if old else (lo, hi)
    return _union(list(bounds.values()))


def gap_spans(
    root: layout.StoreRoot, contract_id: int, tick_type: str, start: int, end: int
) -> tuple[list[Interval], list[Interval]]:
    """The stream's gaps that reach into [start, end), at their latest status: the filled
    ones as [start, end] (held: backfill stored their ticks, between runs too) and the
    others as (start, end) (holes: their edges are the stored ticks around them)."""
    if not _exists(root, layout.GAPS):
        return [], []
    where = _stream_filter(contract_id, tick_type)
    where &= (ds.field("start") < pa.scalar(end, layout.TIME)) & (
        ds.field("end") > pa.scalar(start, layout.TIME)
    )
    table = gaps.latest(
        layout.gaps_dataset(root).to_table(columns=layout.GAP_SCHEMA.names, filter=where)
    )
    filled, other = [], []
    for row in zip(
        table["start"].cast(pa.int64()).to_pylist(),
        table["end"].cast(pa.int64()).to_pylist(),
        table["status"].to_pylist(),
        strict=True,
    ):
        lo, hi, status = row
        if status == "filled":
            filled.append((lo, hi + 1))
        else:
            other.append((lo + 1, hi))
    return _union(filled), _union(other)


def plan(
    root: layout.StoreRoot | None,
    parts: list,
    contract_id: int,
    tick_type: str,
    start: int,
    end: int,
) -> list[tuple[int, int, str]]:
    """[start, end) cut into (lo, hi, "store" | "ib") pieces, in time order; `parts`: the
    stream's (`stream_parts`)."""
    held: list[Interval] = []
    if root is not None:
        filled, holes = gap_spans(root, contract_id, tick_type, start, end)
        held = _minus(_union(runs(root, parts, start, end) + filled), holes)
        held = [(max(lo, start), min(hi, end)) for lo, hi in held if lo < end and hi > start]
    out: list[tuple[int, int, str]] = []
    cursor = start
    for lo, hi in held:
        if lo > cursor:
            out.append((cursor, lo, "ib"))
        out.append((lo, hi, "store"))
        cursor = hi
    if cursor < end:
        out.append((cursor, end, "ib"))
    return out


READ_COLUMNS = ("time", "sequence", *FIELDS, "exchange", "conditions", "ib_time", "source")


def read(
    root: layout.StoreRoot, parts: list, contract_id: int, tick_type: str, lo: int, hi: int
) -> pa.Table:
    """The stream's (`parts`) stored ticks received in [lo, hi), oldest first, as a table of
    READ_COLUMNS (`time` the receive stamp). A part a compaction swapped meanwhile: the
    stream is listed again."""
    columns = list(READ_COLUMNS)
    try:
        dataset = _dataset(root, parts, lo, hi)
        table = dataset.to_table(columns=columns, filter=_between(lo, hi)) if dataset else None
    except (FileNotFoundError, pa.ArrowInvalid):
        dataset = _dataset(root, stream_parts(root, contract_id, tick_type), lo, hi)
        table = dataset.to_table(columns=columns, filter=_between(lo, hi)) if dataset else None
    if table is None:
        return layout.TICK_SCHEMA.empty_table().select(columns)
    return table.sort_by("time")
