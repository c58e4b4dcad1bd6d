"""Rows of `DIR/gaps`: what the store knows to be missing (a crash's unflushed tail, an IB
outage, ticks a failing disk made the recorder drop), one row per stream and hole.

Files are never rewritten: a gap's new status (backfill: filled, partly_filled, unfillable)
is a new row of the same gap (`IDENTITY`) with a higher `revision`, and readers keep the
highest revision of each gap (`latest`).
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc

from ibstream.store import layout, parts

IDENTITY = ("contract_id", "tick_type", "start", "reason", "server_id")


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
        "revision": 0,
        "ticks_added": 0,
    }


def revised(gap: dict, status: str, message: str, ticks_added: int, end: int | None = None) -> dict:
    """The row that supersedes `gap` (a row as read, times as ns or Timestamps) with `status`;
    `end` widens it to where the stream's live ticks resumed."""
    new = {name: gap.get(name) for name in layout.GAP_SCHEMA.names}
    new.update(status=status, message=message, ticks_added=ticks_added)
    new["revision"] = (gap.get("revision") or 0) + 1
    if end is not None:
        new["end"] = end
    return new


def latest(table: pa.Table) -> pa.Table:
    """Each gap once, at its highest revision (old files' null revision counts as 0)."""
    if table.num_rows == 0:
        return table
    revision = pc.fill_null(table["revision"], 0)
    table = table.set_column(table.schema.get_field_index("revision"), "revision", revision)
    keys = [k for k in IDENTITY]
    top = table.group_by(keys).aggregate([("revision", "max")])
    return table.join(
        top.rename_columns([*keys, "revision"]), keys=[*keys, "revision"], join_type="inner"
    ).select(table.schema.names)


def write(root: layout.StoreRoot, writer_id: str, rows: list[dict]) -> None:
    """A gaps file, complete or absent, under the UTC day of its first gap."""
    table = pa.Table.from_pylist(rows, schema=layout.GAP_SCHEMA)
    first = min(_ns(r["start"]) for r in rows)
    day, _ = layout.utc_day_hour(first)
    name = f"{first:019d}-{writer_id}-{time.time_ns()}{layout.PART_SUFFIX}"
    parts.write_table(root, root.path(layout.gap_dir(day), name), table)


def _ns(value: object) -> int:
    return value if isinstance(value, int) else int(value.value)  # type: ignore[attr-defined]
