"""Rows of `DIR/gaps`: what the store knows to be missing (a crash's unflushed tail, an IB
outage, ticks a failing disk made the recorder drop), one row per stream and hole."""

from __future__ import annotations

import time

import pyarrow as pa

from ibstream.store import layout, parts


def row(
    contract_id: int,
    tick_type: str,
    start: int,
    end: int,
    reason: str,
    server_id: str,
    after_sequence: int | None,
    message: str | None = None,
) -> dict:
    """One gap: ticks between `start` and `end` (ns) may be missing; `server_id` is the run
    that lost them, `after_sequence` its last sequence before the hole."""
    return {
        "contract_id": contract_id,
        "tick_type": tick_type,
        "start": start,
        "end": end,
        "reason": reason,
        "server_id": server_id,
        "after_sequence": after_sequence,
        "status": "open",  # history fills it later: filled | partly_filled | unfillable
        "message": message or reason.replace("_", " "),
    }


def write(root: layout.StoreRoot, writer_id: str, rows: list[dict]) -> None:
    """A gaps file, complete or absent, under the UTC day of its first gap."""
    table = pa.Table.from_pylist(rows, schema=layout.GAP_SCHEMA)
    first = min(r["start"] for r in rows)
    day, _ = layout.utc_day_hour(first)
    name = f"{first:019d}-{writer_id}-{time.time_ns()}{layout.PART_SUFFIX}"
    parts.write_table(root, root.path(layout.gap_dir(day), name), table)
