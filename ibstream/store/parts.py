"""Ticks as they leave the hub, turned into part files: one Arrow table per partition and
hour, written aside and renamed into place complete (see `layout`).

The hub hands over `Tick` objects and their sequences; the columns are built here in bulk
(one C-level transpose, one Arrow conversion per column), off the per-tick path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ibstream.model import ContractInfo, Tick
from ibstream.store import layout

COMPRESSION = "zstd"
_DICTIONARY = ["exchange", "conditions", "server_id", "symbol", "local_symbol", "source"]
_NS_PER_HOUR = 3_600_000_000_000
_RECV, _IB_TIME = attrgetter("recv_ns"), attrgetter("ib_time")
_EXCHANGE, _CONDITIONS = attrgetter("exchange"), attrgetter("conditions")
_FLOATS = ("price", "size", "bid_price", "bid_size", "ask_price", "ask_size", "mid_price")


@dataclass(frozen=True)
class Part:
    """One part file's rows: a partition (day, contract, tick type) within one UTC hour."""

    day: str
    hour: int
    contract_id: int
    tick_type: str
    table: pa.Table

    @property
    def first_ns(self) -> int:
        return self.table.column("time")[0].value

    @property
    def last_ns(self) -> int:
        return self.table.column("time")[-1].value

    def relative_path(self, server_id: str) -> str:
        return (
            layout.partition_dir(self.day, self.contract_id, self.tick_type)
            + "/"
            + layout.part_name(self.hour, self.first_ns, server_id)
        )


def build_parts(
    contract: ContractInfo,
    tick_type: str,
    ticks: Sequence[Tick],
    sequences: Sequence[int],
    server_id: str,
    source: str = "live",
) -> list[Part]:
    """One stream's ticks (in arrival order) as parts: one per UTC hour they span."""
    if not ticks:
        return []
    recv = np.fromiter(map(_RECV, ticks), np.int64, len(ticks))
    ib_seconds = pa.array(list(map(_IB_TIME, ticks)), pa.int64())
    arrays = {
        "time": pa.array(recv).cast(layout.TIME),
        "sequence": pa.array(np.asarray(sequences, np.int64)),
        **{name: pa.array(list(map(attrgetter(name), ticks)), pa.float64()) for name in _FLOATS},
        "exchange": pa.array(list(map(_EXCHANGE, ticks)), pa.string()),
        "conditions": pa.array(list(map(_CONDITIONS, ticks)), pa.string()),
        "ib_time": pc.multiply(ib_seconds, 1_000_000_000).cast(layout.TIME),
    }
    table = _with_origin(pa.table(arrays), server_id, contract, source)
    hours = recv // _NS_PER_HOUR
    cuts = [0, *(np.flatnonzero(hours[1:] != hours[:-1]) + 1).tolist(), len(ticks)]
    parts = []
    for lo, hi in zip(cuts, cuts[1:], strict=False):
        day, hour = layout.utc_day_hour(int(recv[lo]))
        parts.append(Part(day, hour, contract.contract_id, tick_type, table.slice(lo, hi - lo)))
    return parts


def _with_origin(table: pa.Table, server_id: str, contract: ContractInfo, source: str) -> pa.Table:
    n = table.num_rows

    def constant(value: str | None) -> pa.Array:
        return pa.repeat(pa.scalar(value, pa.string()), n)

    table = (
        table.append_column("server_id", constant(server_id))
        .append_column("symbol", constant(contract.symbol))
        .append_column("local_symbol", constant(contract.local_symbol or None))
        .append_column("source", constant(source))
    )
    return table.cast(layout.TICK_SCHEMA)


def write_part(root: layout.StoreRoot, part: Part, server_id: str, contract: dict | None) -> str:
    """Write one part so that it appears complete or not at all; returns its path."""
    path = root.path(part.relative_path(server_id))
    meta = layout.file_metadata(contract, part.tick_type, server_id)
    write_table(root, path, part.table.replace_schema_metadata(meta))
    return path


def write_table(root: layout.StoreRoot, path: str, table: pa.Table) -> None:
    """A Parquet file at `path` that readers see only complete: written aside and renamed on
    a local disk; on an object store the upload itself becomes visible only when done."""
    head = path.rsplit("/", 1)[0]
    root.fs.create_dir(head, recursive=True)
    target = layout.tmp_name(path) if root.local else path
    pq.write_table(
        table,
        target,
        filesystem=root.fs,
        compression=COMPRESSION,
        use_dictionary=[name for name in _DICTIONARY if name in table.schema.names],
    )
    if target != path:
        root.fs.move(target, path)
