"""Compaction: a partition's small parts of one hour become one file, rows in time order,
without a reader ever seeing a row twice, and finished after a crash by `recover`.

For the parts P1..Pn of a partition-hour (name order, i.e. time order):
  1. the merged rows are written aside, under a hidden name beside P1 (complete, or absent);
  2. a journal `_state/compact-<id>.json` says {tmp, target: P1, delete: [P2..Pn]};
  3. P2..Pn are deleted;  4. the merged file is renamed onto P1 (an atomic replace);
  5. the journal is removed.
While a journal exists, readers take its merged file in place of P1..Pn (`catalog`), so
every moment shows each row once. A crash before 2 leaves a stale hidden file (removed by
`recover`); after it, `recover` redoes 3-5. A late part of an hour already compacted is
merged in by the next compaction. One compaction at a time per local store (a lock file
under `_state/`, released by the kernel when its process dies).
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import groupby

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ibstream.store import catalog, journal, layout, parts

log = logging.getLogger(__name__)
_NS_PER_HOUR = 3_600_000_000_000
_MARK = ".compact-"  # in every hidden file a compaction writes
LOCK = "compact.lock"
Step = Callable[[str], None]  # called between the steps (names above): tests crash there


@dataclass
class CompactReport:
    hours: int = 0  # partition-hours merged into one file
    parts_merged: int = 0  # part files they were
    rows: int = 0
    recovered: int = 0  # compactions a crash had left unfinished, finished first
    corrupt: list[str] = field(default_factory=list)  # parts left in place, unreadable
    busy: bool = False  # another compaction held the store: nothing done

    def to_dict(self) -> dict:
        return asdict(self)


def recover(root: object, *, part_tmps: bool = True) -> int:
    """Finish every compaction a crash left (returns how many) and remove the hidden files
    it left; with `part_tmps`, also the recorder's half-written parts (call it so only where
    no recorder writes to the store, e.g. at its start-up)."""
    store = _root(root)
    if store.local and not os.path.isdir(store.base):
        return 0  # no store yet: nothing to finish (and no directory made for a typo)
    with _locked(store) as held:
        if not held:
            log.info("a compaction is running on %s; it finishes its own work", store.uri)
            return 0
        return _recover(store, part_tmps)


def compact(
    root: object,
    *,
    before_ns: int | None = None,
    progress: bool = False,
    on_step: Step | None = None,
) -> CompactReport:
    """Merge the parts of every partition-hour that ended before `before_ns` (None: all)
    and has more than one part. `progress`: a tqdm bar over the hours."""
    store = _root(root)
    report = CompactReport()
    with _locked(store) as held:
        if not held:
            report.busy = True
            return report
        report.recovered = _recover(store, part_tmps=False)
        validator = catalog.Validator(store)
        groups = _groups(catalog.list_parts(store), before_ns)
        from tqdm.auto import tqdm

        for group in tqdm(groups, disable=not progress, unit="hour", desc="compacting"):
            good = validator.usable(group)
            report.corrupt += [p.path for p in group if p not in good]
            if len(good) > 1:
                report.rows += _merge(store, good, on_step or _no_step)
                report.hours += 1
                report.parts_merged += len(good)
    log.info("compacted %s: %s", store.uri, report)
    return report


def _no_step(name: str) -> None:
    pass


def _root(root: object) -> layout.StoreRoot:
    return root if isinstance(root, layout.StoreRoot) else layout.open_root(root)


def _groups(found: list[catalog.PartFile], before_ns: int | None) -> list[list[catalog.PartFile]]:
    def hour(p: catalog.PartFile) -> tuple:
        return p.day, p.contract_id, p.tick_type, p.hour

    out = []
    for (day, *_, h), members in groupby(sorted(found, key=lambda p: (hour(p), p.path)), hour):
        group = list(members)
        ends = _hour_start_ns(day, h) + _NS_PER_HOUR
        if len(group) > 1 and (before_ns is None or ends <= before_ns):
            out.append(group)
    return out


def _hour_start_ns(day: str, hour: int) -> int:
    from datetime import UTC, datetime

    moment = datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000


def _merge(root: layout.StoreRoot, group: list[catalog.PartFile], step: Step) -> int:
    """One partition-hour's parts as one file, swapped in as the module doc says."""
    tables = [pq.read_table(p.path, filesystem=root.fs) for p in group]
    meta = tables[-1].schema.metadata
    merged = pa.concat_tables([t.cast(layout.TICK_SCHEMA) for t in tables])
    order = pc.sort_indices(merged.column("time"))  # stable: equal stamps keep part order
    merged = merged.take(order).replace_schema_metadata(meta)
    target = group[0].path
    head, name = posixpath.split(target)
    job = journal.Journal(
        uuid.uuid4().hex[:12],
        _rel(
            root, posixpath.join(head, f".{name}{_MARK}{uuid.uuid4().hex[:8]}{layout.TMP_SUFFIX}")
        ),
        _rel(root, target),
        tuple(_rel(root, p.path) for p in group[1:]),
    )
    parts.write_table(root, root.path(job.tmp), merged)
    step("merged")
    journal.save(root, job)
    step("journaled")
    _finish(root, job, step)
    return merged.num_rows


def _finish(root: layout.StoreRoot, job: journal.Journal, step: Step = _no_step) -> None:
    """Steps 3-5 of a journaled compaction; safe to run again from any point."""
    if root.fs.get_file_info(root.path(job.tmp)).type == pafs.FileType.File:
        for rel in job.delete:
            with contextlib.suppress(FileNotFoundError):
                root.fs.delete_file(root.path(rel))
            step("deleting")
        step("deleted")
        root.fs.move(root.path(job.tmp), root.path(job.target))
        step("renamed")
    journal.remove(root, job)


def _rel(root: layout.StoreRoot, path: str) -> str:
    return posixpath.relpath(path, root.base) if root.base else path


def _recover(root: layout.StoreRoot, part_tmps: bool) -> int:
    done = journal.pending(root)
    for job in done:
        log.warning("finishing a compaction a crash interrupted: %s", job.target)
        _finish(root, job)
    for folder in (layout.TICKS, layout.GAPS, layout.STATE):
        selector = pafs.FileSelector(root.path(folder), recursive=True, allow_not_found=True)
        for info in root.fs.get_file_info(selector):
            name = info.base_name
            if info.type != pafs.FileType.File or not name.startswith("."):
                continue
            if not name.endswith(layout.TMP_SUFFIX):
                continue
            if _MARK in name or name.startswith(f".{journal.PREFIX}") or part_tmps:
                log.info("removing %s, left half-written by a crash", info.path)
                with contextlib.suppress(FileNotFoundError):
                    root.fs.delete_file(info.path)
    return len(done)


@contextlib.contextmanager
def _locked(root: layout.StoreRoot) -> Iterator[bool]:
    """Hold the store's compaction lock if free (yields False if not); object stores have
    no lock: run one compactor per bucket prefix (the recorder)."""
    if not root.local:
        yield True
        return
    import fcntl

    folder = root.path(layout.STATE)
    os.makedirs(folder, exist_ok=True)
    fd = os.open(posixpath.join(folder, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
