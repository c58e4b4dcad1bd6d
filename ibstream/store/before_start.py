"""`--backfill-from HH:MM`: the time before a recorded stream first started that day, as a gap.

HH:MM is read in the contract's exchange time zone (IB's contract details `timeZoneId`, e.g.
US/Central for ES) when IB gives one this machine knows, else in UTC; the day is the day of
the stream's start in that zone. The gap (reason `before_start`, status `open`) runs from HH:MM
to the stream's first tick of that day in the store (an earlier run's, when one recorded it
the same day) or to the moment this run subscribed it; the backfill worker fills it like the
others. It is written once per stream and day: a restart the same day finds the row and asks
IB nothing again (a different HH:MM the same day does not widen it either).
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ibstream.store import gaps, layout

REASON = "before_start"


class BackfillFromError(ValueError):
    """HH:MM later than the stream's first start that day (`settings.parse_clock` checks
    its form)."""


def zone_of(name: str | None) -> tzinfo:
    """The exchange's time zone by IB's name, or UTC when IB gave none this machine knows."""
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return UTC


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000


def gap_for(
    root: layout.StoreRoot,
    contract_id: int,
    tick_type: str,
    clock: time,
    zone: tzinfo,
    started_ns: int,
    server_id: str,
) -> dict | None:
    """The `before_start` gap row of a stream subscribed at `started_ns`, or None when the
    store has one for that day already. BackfillFromError when HH:MM is not before the
    stream's first start that day (there is nothing before it to fill)."""
    day = datetime.fromtimestamp(started_ns / 1e9, zone).date()
    day_start = datetime.combine(day, time(0), zone)
    lo, hi = _ns(day_start), _ns(day_start + timedelta(days=1))
    if _has_gap(root, contract_id, tick_type, lo, hi):
        return None
    first = min(started_ns, _first_tick(root, contract_id, tick_type, lo) or started_ns)
    start = _ns(datetime.combine(day, clock, zone))
    if start >= first:
        began = datetime.fromtimestamp(first / 1e9, zone)
        raise BackfillFromError(
            f"--backfill-from {clock:%H:%M} ({zone}) is not before the stream {contract_id} "
            f"{tick_type} first started that day ({began:%Y-%m-%d %H:%M:%S %Z}): nothing before "
            "it to fill; give an earlier time"
        )
    message = f"before the stream first started that day (--backfill-from {clock:%H:%M} {zone})"
    return gaps.row(contract_id, tick_type, start, first, REASON, server_id, None, message)


def _has_gap(root: layout.StoreRoot, contract_id: int, tick_type: str, lo: int, hi: int) -> bool:
    if root.fs.get_file_info(root.path(layout.GAPS)).type.name == "NotFound":
        return False
    start = ds.field("start")
    where = (
        (ds.field("contract_id") == contract_id)
        & (ds.field("tick_type") == tick_type)
        & (ds.field("reason") == REASON)
        & (start >= pa.scalar(lo, layout.TIME))
        & (start < pa.scalar(hi, layout.TIME))
    )
    return layout.gaps_dataset(root).count_rows(filter=where) > 0


def _first_tick(root: layout.StoreRoot, contract_id: int, tick_type: str, lo: int) -> int | None:
    """Receive ns of the stream's first stored tick at or after `lo`, or None."""
    if root.fs.get_file_info(root.path(layout.TICKS)).type.name == "NotFound":
        return None
    where = (
        (ds.field("contract_id") == contract_id)
        & (ds.field("tick_type") == tick_type)
        & (ds.field("time") >= pa.scalar(lo, layout.TIME))
        & (ds.field("date") >= datetime.fromtimestamp(lo / 1e9, UTC).date().isoformat())
    )
    table = layout.ticks_dataset(root).to_table(columns=["time"], filter=where)
    return pc.min(table["time"].cast(pa.int64())).as_py() if table.num_rows else None
