"""Where a recording lives and what its files hold: the one description every store module
(recorder, reader, compaction, replay) and every outside engine (DuckDB, Polars, Spark) shares.

A store is a directory, local or an object-store URI (`s3://bucket/prefix`), laid out as
hive partitions so engines prune by path:

    DIR/ticks/date=YYYY-MM-DD/contract_id=N/tick_type=T/HH-<first recv_ns>-<server_id>.parquet
    DIR/gaps/date=YYYY-MM-DD/<first start>-<server_id>.parquet
    DIR/_state/           the recorder's crash markers and compaction journals (not data)

`date` is the UTC day of the receive time and `HH` its UTC hour: a part file holds one
partition's ticks of one hour in arrival order. Partition keys live only in paths (the
convention of Spark and pyarrow's writers), so no engine sees a column twice. A part is
written aside (`.NAME.tmp`, which no `*.parquet` glob and no hive reader lists) and renamed
into place complete; on object stores an upload becomes visible only when it completes.
"""

from __future__ import annotations

import functools
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from ibstream.model import TickType

FORMAT_VERSION = 1
METADATA_KEY = b"ibstream"  # Parquet key-value metadata: JSON with the contract and schema
TICKS, GAPS, STATE = "ticks", "gaps", "_state"
PART_SUFFIX = ".parquet"
TMP_SUFFIX = ".tmp"
TIME = pa.timestamp("ns", tz="UTC")

# Columns of a tick part file, in order. The tick frame of `collect` (its index `time` is a
# column here), plus where each tick came from; contract_id / tick_type / date are the path's.
TICK_SCHEMA = pa.schema(
    [
        ("time", TIME),  # the server's receive stamp (recv_ns), strictly increasing
        ("sequence", pa.int64()),  # the recording server's sequence (0: historical)
        ("price", pa.float64()),
        ("size", pa.float64()),
        ("bid_price", pa.float64()),
        ("bid_size", pa.float64()),
        ("ask_price", pa.float64()),
        ("ask_size", pa.float64()),
        ("mid_price", pa.float64()),
        ("exchange", pa.string()),
        ("conditions", pa.string()),
        ("ib_time", TIME),  # IB's own tick time, one-second resolution
        ("server_id", pa.string()),  # which server run numbered `sequence`
        ("symbol", pa.string()),
        ("local_symbol", pa.string()),
        ("source", pa.string()),  # "live" (received from the stream) or "historical"
    ]
)
PARTITION_SCHEMA = pa.schema(
    [("date", pa.string()), ("contract_id", pa.int64()), ("tick_type", pa.string())]
)
# Reading fast: the text columns and tick_type as Arrow dictionaries (as Parquet stores them)
_TEXT = pa.dictionary(pa.int32(), pa.string())
_TEXT_COLUMNS = frozenset(f.name for f in TICK_SCHEMA if f.type == pa.string())
_SCAN_KEYS = pa.schema([("date", pa.string()), ("contract_id", pa.int64()), ("tick_type", _TEXT)])
SCAN_SCHEMA = pa.schema(
    [pa.field(f.name, _TEXT) if f.name in _TEXT_COLUMNS else f for f in TICK_SCHEMA]
    + list(_SCAN_KEYS)
)
SCAN_OPTIONS = {  # ds.dataset's schema, format and partitioning for a dictionary scan
    "schema": SCAN_SCHEMA,
    "format": ds.ParquetFileFormat(
        read_options=ds.ParquetReadOptions(dictionary_columns=set(_TEXT_COLUMNS))
    ),
    "partitioning": ds.HivePartitioning(
        _SCAN_KEYS, dictionaries={"tick_type": pa.array([t.value for t in TickType])}
    ),
}


@functools.cache
def scan_pool() -> pa.MemoryPool:
    """The pool a read into a tick frame allocates from: jemalloc where pyarrow has it.
    The default, mimalloc, madvises its arena MADV_HUGEPAGE: a process's first scan of a
    day of ES (0.27 GB) faulted in twice that as huge pages there, 1 s of kernel time on a
    VM that hands free pages back to its host; from jemalloc 0.15 s (README, Performance)."""
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc (as on Windows)
        return pa.default_memory_pool()


_PLAIN_OPTIONS = {
    "schema": pa.unify_schemas([TICK_SCHEMA, PARTITION_SCHEMA]),
    "format": "parquet",
    "partitioning": ds.partitioning(PARTITION_SCHEMA, flavor="hive"),
}
GAP_SCHEMA = pa.schema(
    [
        ("contract_id", pa.int64()),
        ("tick_type", pa.string()),
        ("start", TIME),  # the last tick known before the hole (or when it began)
        ("end", TIME),  # the first moment ticks were received again
        ("reason", pa.string()),  # server_restarted | ib_disconnected | record_failed | ...
        ("server_id", pa.string()),  # the run that lost the ticks
        ("after_sequence", pa.int64()),  # that run's last sequence before the hole
        ("status", pa.string()),  # open | filled | partly_filled | unfillable
        ("message", pa.string()),
        # Added with backfill (older files read them as null): a gap's status changes by a
        # new row of the same gap (contract_id, tick_type, start, reason, server_id) with a
        # higher `revision` (null = 0, the recorder's row); readers keep the highest.
        ("revision", pa.int64()),
        ("ticks_added", pa.int64()),  # historical ticks stored for it so far
    ]
)


@dataclass(frozen=True)
class StoreRoot:
    """A store's filesystem and base path: local directories and object stores alike."""

    fs: pafs.FileSystem
    base: str
    uri: str

    def path(self, *parts: str) -> str:
        return posixpath.join(self.base, *parts) if self.base else posixpath.join(*parts)

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)


def open_root(location: object) -> StoreRoot:
    """A store location (a path, or a URI pyarrow knows: `s3://bucket/prefix?endpoint_override=
    ...`) as a `StoreRoot`. The location need not exist yet."""
    text = str(location)
    if "://" in text:
        fs, base = pafs.FileSystem.from_uri(text)
    else:
        import os

        fs, base = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(text))
    return StoreRoot(fs, base.rstrip("/"), text)


def utc_day_hour(ns: int) -> tuple[str, int]:
    moment = datetime.fromtimestamp(ns // 1_000_000_000, UTC)
    return moment.strftime("%Y-%m-%d"), moment.hour


def partition_dir(day: str, contract_id: int, tick_type: str) -> str:
    return f"{TICKS}/date={day}/contract_id={contract_id}/tick_type={tick_type}"


def part_name(hour: int, first_ns: int, server_id: str) -> str:
    """Names sort in time order within a partition; the hour prefix groups compaction."""
    return f"{hour:02d}-{first_ns:019d}-{server_id}{PART_SUFFIX}"


def gap_dir(day: str) -> str:
    return f"{GAPS}/date={day}"


def tmp_name(path: str) -> str:
    """Where `path` is written before it is renamed into place: hidden from every reader."""
    head, tail = posixpath.split(path)
    return posixpath.join(head, f".{tail}{TMP_SUFFIX}")


def file_metadata(contract: dict | None, tick_type: str | None, server_id: str) -> dict:
    """The key-value metadata of every part: enough to read a part without the store."""
    body = {
        "format": FORMAT_VERSION,
        "server_id": server_id,
        "tick_type": tick_type,
        "contract": contract,
    }
    return {METADATA_KEY: orjson.dumps(body)}


def read_file_metadata(schema: pa.Schema) -> dict:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return orjson.loads(raw) if raw else {}


def ticks_dataset(
    root: StoreRoot, *, exclude_invalid: bool = True, dictionaries: bool = False
) -> ds.Dataset:
    """Every tick part as one pyarrow dataset, partition columns from the paths.

    `dictionaries`: the text columns (exchange, conditions, symbols, tick_type) come as
    Arrow dictionaries (`SCAN_SCHEMA`), as Parquet stores them: a scan then never spells
    out a string per row (the fast way into a tick frame, `store.frame.frame_from_table`)."""
    return ds.dataset(
        root.path(TICKS),
        filesystem=root.fs,
        exclude_invalid_files=exclude_invalid,
        **(SCAN_OPTIONS if dictionaries else _PLAIN_OPTIONS),
    )


def gaps_dataset(root: StoreRoot) -> ds.Dataset:
    return ds.dataset(
        root.path(GAPS),
        filesystem=root.fs,
        format="parquet",
        schema=pa.unify_schemas([GAP_SCHEMA, pa.schema([("date", pa.string())])]),
        partitioning=ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive"),
    )


def write_small(root: StoreRoot, path: str, data: bytes) -> None:
    """A small file (a marker, a journal) replaced so that it exists complete or not at all:
    aside and renamed on a local disk, one upload on an object store."""
    root.fs.create_dir(posixpath.dirname(path), recursive=True)
    target = tmp_name(path) if root.local else path
    with root.fs.open_output_stream(target) as out:
        out.write(data)
    if target != path:
        root.fs.move(target, path)


def state_files(root: StoreRoot, prefix: str) -> list[tuple[str, bytes]]:
    """(path, content) of the files under `_state/` whose names start with `prefix`; one
    that vanished while listed is left out."""
    selector = pafs.FileSelector(root.path(STATE), allow_not_found=True)
    found = []
    for info in root.fs.get_file_info(selector):
        if info.type != pafs.FileType.File or not info.base_name.startswith(prefix):
            continue
        try:
            with root.fs.open_input_stream(info.path) as stream:
                found.append((info.path, stream.read()))
        except FileNotFoundError:
            continue
    return found
