"""What the recording knows it is missing, told where a replay reaches it.

The recorder writes each hole it knows of (`server_restarted` after a crash, IB outages,
`record_failed`) to `DIR/gaps`; a replay says so with an `info` `gap` on the stream just
before the first tick after the hole (`details.reason` the recorded reason, `recorded`:
true), as a live server tells what it could not replay. Sequences alone would not show a
crash's hole: the next run's are continued (`runs`).
"""

from __future__ import annotations

import logging
from collections import deque

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from ibstream.errors import StreamError
from ibstream.model import TickType
from ibstream.protocol.times import iso_ns
from ibstream.store import gaps, layout

log = logging.getLogger(__name__)


def recorded_gaps(
    root: layout.StoreRoot, contract_id: int, start_ns: int, end_ns: int | None
) -> dict[TickType, deque[dict]]:
    """The contract's recorded gaps (at their latest status, filled ones left out) that end
    inside the window, per tick type, by end."""
    if root.fs.get_file_info(root.path(layout.GAPS)).type != pafs.FileType.Directory:
        return {}
    try:
        table = layout.gaps_dataset(root).to_table(filter=ds.field("contract_id") == contract_id)
    except (OSError, pa.ArrowException) as exc:
        log.warning("the recorded gaps of %s cannot be read (%s)", contract_id, exc)
        return {}
    found: dict[TickType, list[dict]] = {}
    for row in gaps.latest(table).to_pylist():
        if row["status"] == "filled":  # backfill stored its ticks: nothing to tell
            continue
        end = _ns(row["end"])
        if end is None or end <= start_ns or (end_ns is not None and end > end_ns):
            continue
        try:
            tick_type = TickType.parse(row["tick_type"])
        except StreamError:
            continue
        found.setdefault(tick_type, []).append({**row, "end": end, "start": _ns(row["start"])})
    return {t: deque(sorted(rows, key=lambda r: r["end"])) for t, rows in found.items()}


def gap_info(row: dict) -> tuple[str, dict]:
    """The `info` `gap` message and details of one recorded gap."""
    start = row["start"]
    span = f"from {iso_ns(start)} " if start is not None else ""
    text = f"the recording has no ticks {span}to {iso_ns(row['end'])}: {row['message']}"
    details = {
        "reason": row["reason"],
        "recorded": True,
        "start": iso_ns(start) if start is not None else None,
        "end": iso_ns(row["end"]),
        "server_id": row.get("server_id"),
    }
    return text, {k: v for k, v in details.items() if v is not None}


def _ns(value: object) -> int | None:
    """A timestamp as pyarrow hands it back (pandas Timestamp or datetime) in epoch ns."""
    if value is None:
        return None
    nanos = getattr(value, "value", None)
    if isinstance(nanos, int):
        return nanos
    return int(value.timestamp() * 1_000_000) * 1_000  # type: ignore[attr-defined]
