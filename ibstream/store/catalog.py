"""What a store holds, from its paths alone: every visible part with its partition and hour,
with compaction journals applied (a reader never sees an hour twice or half-swapped), and
which parts open as Parquet (a corrupt one is skipped with a warning naming it).
"""

from __future__ import annotations

import logging
import posixpath
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ibstream.store import journal, layout
from ibstream.store.errors import CorruptPartWarning, StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartFile:
    """One visible part: its path, partition (from the path) and hour (from the name)."""

    path: str
    day: str
    contract_id: int
    tick_type: str
    hour: int
    size: int
    mtime_ns: int

    @property
    def key(self) -> tuple[str, int, int]:
        return self.path, self.size, self.mtime_ns


def check_root(root: layout.StoreRoot) -> None:
    """A store that exists and is a recording, else a StoreError saying what it is instead."""
    where = root.uri
    try:
        info = root.fs.get_file_info(root.base) if root.base else None
    except OSError as exc:
        raise StoreError("STORE_UNREADABLE", f"cannot read {where}: {exc}") from exc
    if info is not None and info.type == pafs.FileType.NotFound and root.local:
        raise StoreError("STORE_NOT_FOUND", f"{where} does not exist; give a recording directory")
    if info is not None and info.type == pafs.FileType.File:
        raise StoreError("NOT_A_DIRECTORY", f"{where} is a file; give a recording directory")
    found = root.fs.get_file_info([root.path(n) for n in (layout.TICKS, layout.GAPS, layout.STATE)])
    if not any(f.type == pafs.FileType.Directory for f in found):
        raise StoreError(
            "NOT_A_RECORDING",
            f"{where} is not a recording (no ticks/, gaps/ or _state/ in it); "
            "give the directory `ibstream serve --record` wrote",
        )


def list_parts(root: layout.StoreRoot) -> list[PartFile]:
    """Every tick part a reader may read now, in path order."""
    base = root.path(layout.TICKS)
    infos = root.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    files = {i.path: i for i in infos if i.type == pafs.FileType.File}
    for j in journal.pending(root):  # an unfinished compaction: its merged file stands for all
        for rel in (j.target, *j.delete):
            files.pop(root.path(rel), None)
        tmp = root.fs.get_file_info(root.path(j.tmp))
        use = tmp if tmp.type == pafs.FileType.File else root.fs.get_file_info(root.path(j.target))
        if use.type == pafs.FileType.File:
            files[root.path(j.target)] = use
    parts = [p for p in (_part(base, path, info) for path, info in files.items()) if p]
    return sorted(parts, key=lambda p: p.path)


def _part(base: str, path: str, info: pafs.FileInfo) -> PartFile | None:
    """The part a path names (its hive keys and hour), or None for anything else."""
    rel = posixpath.relpath(path, base)
    *dirs, name = rel.split("/")
    if name.startswith((".", "_")) or not name.endswith(layout.PART_SUFFIX):
        return None  # written aside, or not ours (a journal's merged file has its target's name)
    keys = dict(d.split("=", 1) for d in dirs if "=" in d)
    try:
        return PartFile(
            info.path,
            keys["date"],
            int(keys["contract_id"]),
            keys["tick_type"],
            int(name.split("-", 1)[0]),
            info.size or 0,
            info.mtime_ns or 0,
        )
    except (KeyError, ValueError):
        log.debug("not a tick part, ignored: %s", path)
        return None


def select(
    parts: Iterable[PartFile],
    contract_ids: Iterable[int] | None = None,
    tick_types: Iterable[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> list[PartFile]:
    """The parts that can hold rows of these contracts, tick types and times (pruned by the
    path's date and the name's hour)."""
    ids = None if contract_ids is None else set(contract_ids)
    kinds = None if tick_types is None else set(tick_types)
    lo = None if start_ns is None else _hour_key(*layout.utc_day_hour(start_ns))
    hi = None if end_ns is None else _hour_key(*layout.utc_day_hour(end_ns))
    return [
        p
        for p in parts
        if (ids is None or p.contract_id in ids)
        and (kinds is None or p.tick_type in kinds)
        and (lo is None or _hour_key(p.day, p.hour) >= lo)
        and (hi is None or _hour_key(p.day, p.hour) <= hi)
    ]


def _hour_key(day: str, hour: int) -> str:
    return f"{day}T{hour:02d}"


class Validator:
    """Which parts open as Parquet: footers read once per file version (path, size, mtime),
    in parallel (an object store answers slowly, not rarely) and kept for what they say
    (rows, time range, the contract); each bad part is warned about once."""

    def __init__(self, root: layout.StoreRoot) -> None:
        self.root = root
        self.footers: dict[tuple[str, int, int], pq.FileMetaData | None] = {}

    def usable(self, parts: list[PartFile], *, deep: bool = False) -> list[PartFile]:
        todo = [p for p in parts if deep or p.key not in self.footers]
        if todo:
            with ThreadPoolExecutor(8) as pool:
                for part, (footer, problem) in zip(
                    todo, pool.map(lambda p: self._read(p, deep), todo), strict=True
                ):
                    if problem and self.footers.get(part.key, True) is not None:
                        warnings.warn(
                            f"skipping corrupt part {part.path}: {problem} (move it out of the "
                            "store to silence this)",
                            CorruptPartWarning,
                            stacklevel=4,
                        )
                    if footer is not None or problem:
                        self.footers[part.key] = footer
        return [p for p in parts if self.footers.get(p.key) is not None]

    def _read(self, part: PartFile, deep: bool) -> tuple[pq.FileMetaData | None, str | None]:
        try:
            with self.root.fs.open_input_file(part.path) as source:
                footer = pq.read_metadata(source)
                if deep:
                    pq.read_table(source)
        except FileNotFoundError:
            return None, None  # gone (compacted) since it was listed: the caller lists again
        except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
            return None, str(exc)
        return footer, None

    def footer(self, part: PartFile) -> pq.FileMetaData:
        return self.footers[part.key]

    def contracts(self, parts: list[PartFile]) -> dict[int, dict]:
        """conId -> the contract as its newest readable part's metadata describes it (one
        footer a contract is read, not every part's)."""
        out = {}
        ordered = sorted(parts, key=lambda p: (p.contract_id, p.day, p.path), reverse=True)
        for contract_id, mine in groupby(ordered, key=lambda p: p.contract_id):
            for part in mine:
                if self.usable([part]):
                    body = layout.read_file_metadata(_kv_schema(self.footer(part)))
                    out[contract_id] = {**(body.get("contract") or {}), "contract_id": contract_id}
                    break
        return dict(sorted(out.items()))


def _kv_schema(footer: pq.FileMetaData):
    import pyarrow as pa

    return pa.schema([], metadata=footer.metadata or {})


def list_gap_files(root: layout.StoreRoot) -> list[PartFile]:
    """Every visible gap file (no tick partition: contract_id -1)."""
    base = root.path(layout.GAPS)
    infos = root.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    out = []
    for info in infos:
        rel = posixpath.relpath(info.path, base).split("/")
        name = rel[-1]
        if info.type != pafs.FileType.File or name.startswith((".", "_")):
            continue
        if not name.endswith(layout.PART_SUFFIX) or not rel[0].startswith("date="):
            continue
        day = rel[0].split("=", 1)[1]
        out.append(PartFile(info.path, day, -1, "", 0, info.size or 0, info.mtime_ns or 0))
    return sorted(out, key=lambda p: p.path)
