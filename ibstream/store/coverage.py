"""What a store can answer of a history request, and its ticks in slices.

A stream (contract, tick type) is held from its first to its last live tick of each recording
run (`server_id`), minus the gaps whose latest status is not `filled` (a gap runs from the
last tick before the hole to where ticks came again, both outside it). Everything else of a
requested range is a hole, asked of IB. Times are receive stamps in ns; intervals half-open.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ibstream.store import gaps, layout

Interval = tuple[int, int]
FIELDS = ("price", "size", "bid_price", "bid_size", "ask_price", "ask_size", "mid_price")


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


def _exists(root: layout.StoreRoot, name: str) -> bool:
    return root.fs.get_file_info(root.path(name)).type.name != "NotFound"


def runs(root: layout.StoreRoot, contract_id: int, tick_type: str) -> list[Interval]:
    """[first, last + 1) of the stream's live ticks per recording run, merged; read in
    batches (two columns), so memory stays bounded whatever the store holds."""
    if not _exists(root, layout.TICKS):
        return []
    where = _stream_filter(contract_id, tick_type) & (ds.field("source") == "live")
    bounds: dict[str, Interval] = {}
    scanner = layout.ticks_dataset(root).scanner(columns=["time", "server_id"], filter=where)
    for batch in scanner.to_batches():
        if not batch.num_rows:
            continue
        table = pa.Table.from_batches([batch]).group_by("server_id")
        agg = table.aggregate([("time", "min"), ("time", "max")]).to_pylist()
        for row in agg:
            lo, hi = row["time_min"].value, row["time_max"].value + 1
            old = bounds.get(row["server_id"])
            bounds[row["server_id"]] = (min(lo, old[0]), max(hi, old[1])) if old else (lo, hi)
    return _union(list(bounds.values()))


def unfilled(root: layout.StoreRoot, contract_id: int, tick_type: str) -> list[Interval]:
    """The stream's gaps not (yet) filled: (start + 1, end)."""
    if not _exists(root, layout.GAPS):
        return []
    table = layout.gaps_dataset(root).to_table(
        columns=layout.GAP_SCHEMA.names, filter=_stream_filter(contract_id, tick_type)
    )
    table = gaps.latest(table).filter(ds.field("status") != "filled")
    starts = table["start"].cast(pa.int64()).to_pylist()
    ends = table["end"].cast(pa.int64()).to_pylist()
    return _union([(s + 1, e) for s, e in zip(starts, ends, strict=True)])


def plan(
    root: layout.StoreRoot | None, contract_id: int, tick_type: str, start: int, end: int
) -> list[tuple[int, int, str]]:
    """[start, end) cut into (lo, hi, "store" | "ib") pieces, in time order."""
    held: list[Interval] = []
    if root is not None:
        held = _minus(runs(root, contract_id, tick_type), unfilled(root, contract_id, tick_type))
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


def read(root: layout.StoreRoot, contract_id: int, tick_type: str, lo: int, hi: int) -> list[dict]:
    """The stream's stored ticks received in [lo, hi), oldest first, as wire tick dicts
    (nulls omitted) with their `source`."""
    where = _stream_filter(contract_id, tick_type)
    where &= (ds.field("time") >= pa.scalar(lo, layout.TIME)) & (
        ds.field("time") < pa.scalar(hi, layout.TIME)
    )
    columns = ["time", "sequence", *FIELDS, "exchange", "conditions", "ib_time", "source"]
    table = layout.ticks_dataset(root).to_table(columns=columns, filter=where)
    table = table.sort_by("time")
    recv = table["time"].cast(pa.int64()).to_pylist()
    ib_time = pc.divide(table["ib_time"].cast(pa.int64()), 1_000_000_000).to_pylist()
    values = {name: table[name].to_pylist() for name in (*FIELDS, "exchange", "conditions")}
    sequence, source = table["sequence"].to_pylist(), table["source"].to_pylist()
    out = []
    for i, stamp in enumerate(recv):
        tick: dict = {
            "contract_id": contract_id,
            "tick_type": tick_type,
            "sequence": sequence[i] or 0,
            "recv_ns": stamp,
        }
        for name, column in values.items():
            if column[i] is not None and column[i] != "":
                tick[name] = column[i]
        if ib_time[i] is not None:
            tick["ib_time"] = ib_time[i]
        tick["source"] = source[i] or "live"
        out.append(tick)
    return out
