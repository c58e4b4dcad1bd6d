"""What a crashed recording run lost: for each stream it held, the window from the last tick
it got on disk to the restart, as `server_restarted` gap rows.

Its own parts (names end in its server id) say where each stream's data on disk ends; the
run's marker may lag them by one flush, or miss a stream whose first parts were written just
before the crash, so the two are joined.
"""

from __future__ import annotations

import logging

import pyarrow.parquet as pq

from ibstream.store import catalog, gaps, layout, state

log = logging.getLogger(__name__)


def gaps_of(root: layout.StoreRoot, run: state.RunMarker, now: int) -> list[dict]:
    """One `server_restarted` gap per stream the crashed `run` held (cancelled streams whose
    ticks were all flushed excepted)."""
    tails = stored_tails(root, run.server_id)
    streams = {(m.contract_id, m.tick_type): m for m in run.streams.values()}
    rows = []
    for key in sorted(set(streams) | set(tails)):
        mark = streams.get(key)
        flushed = mark.last_sequence or 0 if mark is not None else 0
        if mark is not None and not mark.open and tails.get(key, (0, 0))[1] <= flushed:
            continue  # cancelled before the crash, and all of it was flushed
        last_ns, last_seq = tails.get(key, (None, None))
        if mark is not None and (last_seq is None or flushed > last_seq):
            last_ns, last_seq = mark.last_ns, mark.last_sequence
        message = (
            f"server {run.server_id} (pid {run.pid} on {run.host}) stopped without a clean "
            "shutdown; ticks it received after its last flush were lost"
        )
        start = last_ns or run.started_ns
        rows.append(
            gaps.row(*key, start, now, "server_restarted", run.server_id, last_seq, message)
        )
    log.warning(
        "the recording run %s ended without a clean stop; its last flush window is in gaps "
        "(reason server_restarted)",
        run.server_id,
    )
    return rows


def stored_tails(root: layout.StoreRoot, server_id: str) -> dict[tuple[int, str], tuple[int, int]]:
    """(receive time, sequence) of the last tick each stream of one server run has on disk,
    from the newest part of that run per stream (part names end in the run's id)."""
    suffix = f"-{server_id}{layout.PART_SUFFIX}"
    newest: dict[tuple[int, str], catalog.PartFile] = {}
    for part in catalog.list_parts(root):
        key = (part.contract_id, part.tick_type)
        if part.path.endswith(suffix) and (
            key not in newest or (part.day, part.path) > (newest[key].day, newest[key].path)
        ):
            newest[key] = part
    tails = {}
    for key, part in newest.items():
        try:
            with root.fs.open_input_file(part.path) as source:
                table = pq.read_table(source, columns=["time", "sequence"])
        except (OSError, ValueError):  # a corrupt part: the marker's word stands
            continue
        if table.num_rows:
            tails[key] = (table["time"][-1].value, table["sequence"][-1].as_py())
    return tails
