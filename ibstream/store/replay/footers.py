"""What a tick part's footer says, read without its ticks: its stream (from the hive path),
its time range, its rows per server run (from the statistics; read from the columns only
for a part of several runs, or one written without statistics) and its contract.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from ibstream.model import ContractInfo, TickType
from ibstream.store import layout
from ibstream.store.replay.runs import Segment
from ibstream.store.replay.runs import segments as runs_of

StreamKey = tuple[int, TickType]  # (contract_id, tick_type), as the live hub keys channels
_CONTRACT_FIELDS = {f.name for f in dataclasses.fields(ContractInfo)}


@dataclass(frozen=True)
class PartFile:
    """One tick part: where it is and what its footer says it holds."""

    path: str
    key: StreamKey
    first_ns: int
    last_ns: int
    rows: int
    segments: tuple[Segment, ...]  # its rows per server run (usually one)


def read_footer(
    root: layout.StoreRoot, path: str, key: StreamKey
) -> tuple[PartFile | None, ContractInfo]:
    """A part's index entry and contract from its footer (None for a part with no rows);
    `key` is its stream, from its hive path (`catalog.list_parts`)."""
    with root.fs.open_input_file(path) as source:
        parquet = pq.ParquetFile(source)
        meta = parquet.metadata
        schema = parquet.schema_arrow
        contract = _contract(layout.read_file_metadata(schema), key[0], parquet)
        if meta.num_rows == 0:
            return None, contract
        time_at, seq_at = schema.get_field_index("time"), schema.get_field_index("sequence")
        if time_at < 0 or seq_at < 0:
            raise ValueError("not a tick part: no time / sequence column")
        stats = [
            meta.row_group(g).column(time_at).statistics
            for g in range(meta.num_row_groups)
            if meta.row_group(g).num_rows
        ]
        if all(t is not None and t.has_min_max for t in stats):
            first_ns, last_ns = min(t.min_raw for t in stats), max(t.max_raw for t in stats)
        else:  # a writer without statistics
            times = parquet.read(columns=["time"]).column("time").cast(pa.int64()).to_numpy()
            first_ns, last_ns = int(times.min()), int(times.max())
        found = _one_run(meta, schema.get_field_index("server_id"), seq_at)
        if found is None:  # several runs (a compacted restart), or no statistics: read them
            table = parquet.read(columns=["server_id", "sequence"])
            ids = table.column("server_id").to_pylist()
            found = runs_of(ids, table.column("sequence").to_numpy())
    part = PartFile(path, key, first_ns, last_ns, meta.num_rows, found)
    return part, contract


def _one_run(meta: pq.FileMetaData, sid_at: int, seq_at: int) -> tuple[Segment, ...] | None:
    """The part's one segment from its statistics, when every row is of one run."""
    if sid_at < 0:
        return None
    ids, firsts, lasts = set(), [], []
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        if not group.num_rows:
            continue
        sid, seq = group.column(sid_at).statistics, group.column(seq_at).statistics
        if sid is None or seq is None or not (sid.has_min_max and seq.has_min_max):
            return None
        ids |= {sid.min, sid.max}
        firsts.append(seq.min_raw)
        lasts.append(seq.max_raw)
    if len(ids) != 1:
        return None
    return (Segment(ids.pop(), min(firsts), max(lasts)),)


def _contract(meta: dict, contract_id: int, parquet: pq.ParquetFile) -> ContractInfo:
    """The contract a part's metadata holds; else what its symbol columns say."""
    described = meta.get("contract")
    if isinstance(described, dict):
        known = {k: v for k, v in described.items() if k in _CONTRACT_FIELDS}
        known["contract_id"] = contract_id
        return ContractInfo(
            **{"symbol": "", "sec_type": "", "exchange": "", "currency": "", **known}
        )
    row: dict = {}
    if parquet.metadata.num_rows:
        first = parquet.read_row_group(0, columns=["symbol", "local_symbol"]).slice(0, 1)
        row = first.to_pylist()[0] if first.num_rows else {}
    symbol = row.get("symbol") or str(contract_id)
    return ContractInfo(contract_id, symbol, "", "", "", local_symbol=row.get("local_symbol") or "")
