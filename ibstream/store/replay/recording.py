"""A recording as replay sees it: its tick parts indexed per stream from their footers.

Opening reads only Parquet footers (row counts, the time and sequence statistics, the
contract in the key-value metadata), never the ticks, so a week of recordings opens in the
time its file listing takes. A part that cannot be read is skipped with a warning naming it;
a location that is not a recording is a `RecordingError` saying what was found instead.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ibstream.errors import ErrorCode, StreamError
from ibstream.ib.contracts import parse_spec
from ibstream.model import ContractInfo, TickType
from ibstream.protocol.times import iso_ns
from ibstream.store import layout
from ibstream.store.replay.runs import Cursor, Runs, Segment
from ibstream.store.replay.runs import segments as runs_of

log = logging.getLogger(__name__)
StreamKey = tuple[int, TickType]  # (contract_id, tick_type), as the live hub keys channels
_CONTRACT_FIELDS = {f.name for f in dataclasses.fields(ContractInfo)}
_SEQUENCE_CACHE = 256


class RecordingError(ValueError):
    """The location is not a recording that can be replayed (the message says why)."""


@dataclass(frozen=True)
class PartFile:
    """One tick part: where it is and what its footer says it holds."""

    path: str
    key: StreamKey
    first_ns: int
    last_ns: int
    rows: int
    segments: tuple[Segment, ...]  # its rows per server run (usually one)


class Recording:
    """The parts of a recording per stream, and its contracts (`resolve` / `search` them)."""

    def __init__(
        self,
        root: layout.StoreRoot,
        parts: dict[StreamKey, list[PartFile]],
        contracts: dict[int, ContractInfo],
    ):
        self.root = root
        self.parts = {
            key: sorted(found, key=lambda p: (p.first_ns, p.path)) for key, found in parts.items()
        }
        self.contracts = contracts
        self.runs = {key: Runs(found) for key, found in self.parts.items()}
        self._before: dict[tuple[StreamKey, int], int] = {}

    @classmethod
    def open(cls, location: object) -> Recording:
        root = layout.open_root(location)
        kind = root.fs.get_file_info(root.base).type
        if kind == pafs.FileType.NotFound:
            raise RecordingError(f"{root.uri} does not exist")
        if kind != pafs.FileType.Directory:
            raise RecordingError(f"{root.uri} is a file, not a recording directory")
        ticks = root.path(layout.TICKS)
        if root.fs.get_file_info(ticks).type != pafs.FileType.Directory:
            raise RecordingError(
                f"{root.uri} is not a recording: it has no {layout.TICKS}/ directory "
                "(record one with `ibstream serve --record DIR`)"
            )
        parts: dict[StreamKey, list[PartFile]] = {}
        contracts: dict[int, ContractInfo] = {}
        for info in root.fs.get_file_info(pafs.FileSelector(ticks, recursive=True)):
            name = info.base_name
            if (
                info.type != pafs.FileType.File
                or name.startswith(".")
                or not name.endswith(layout.PART_SUFFIX)
            ):
                continue
            try:
                part, contract = _read_footer(root, info.path)
            except (OSError, pa.ArrowException, ValueError, KeyError) as exc:
                log.warning("skipping unreadable part %s (%s)", info.path, exc)
                continue
            if part is not None:
                parts.setdefault(part.key, []).append(part)
                contracts.setdefault(part.key[0], contract)
        if not parts:
            raise RecordingError(f"{root.uri} holds no readable tick parts under {layout.TICKS}/")
        return cls(root, parts, contracts)

    @property
    def uri(self) -> str:
        return self.root.uri

    @property
    def first_ns(self) -> int:
        return min(found[0].first_ns for found in self.parts.values())

    @property
    def last_ns(self) -> int:
        return max(p.last_ns for found in self.parts.values() for p in found)

    def span(self) -> str:
        return f"{iso_ns(self.first_ns)} to {iso_ns(self.last_ns)}"

    def only(self, specs: list[str | int]) -> Recording:
        """This recording limited to the contracts `specs` name (each must be in it)."""
        keep = {self.resolve(spec).contract_id for spec in specs}
        parts = {key: found for key, found in self.parts.items() if key[0] in keep}
        return Recording(self.root, parts, {c: self.contracts[c] for c in keep})

    def has_ticks(self, start_ns: int | None, end_ns: int | None) -> bool:
        lo, hi = start_ns or 0, end_ns if end_ns is not None else 2**63
        return any(p.first_ns < hi and p.last_ns >= lo for f in self.parts.values() for p in f)

    def describe(self) -> str:
        names = sorted({c.local_symbol or c.symbol for c in self.contracts.values()})
        return ", ".join(names)

    # -- contracts ---------------------------------------------------------------------
    def search(self, spec: str | int) -> list[ContractInfo]:
        """The recorded contracts `spec` names: a conId, a local symbol (ESZ6), a symbol
        (ES, AAPL, EUR.USD) or an explicit SYMBOL:SECTYPE[:EXCHANGE[:CURRENCY][:EXPIRY]]."""
        text = str(spec).strip()
        if isinstance(spec, int) or text.isdigit():
            found = self.contracts.get(int(text))
            return [found] if found is not None else []
        upper = text.upper()
        exact = [c for c in self.contracts.values() if c.local_symbol.upper() == upper]
        if exact:
            return exact
        try:
            fields = parse_spec(text)
        except StreamError:
            return []
        return [c for c in self.contracts.values() if _matches(c, fields, explicit=":" in text)]

    def resolve(self, spec: str | int) -> ContractInfo:
        """One recorded contract (of several futures, the nearest expiry), else
        CONTRACT_NOT_FOUND listing what the recording holds."""
        found = self.search(spec)
        if not found:
            raise StreamError(
                ErrorCode.CONTRACT_NOT_FOUND,
                f"{spec!r} is not in this recording; it holds {self.describe()}",
                details={"contract": str(spec), "recorded": self.describe().split(", ")},
            )
        return min(found, key=lambda c: (c.last_trade_date or "99999999", c.contract_id))

    # -- sequences ---------------------------------------------------------------------
    def last_sequence(self, key: StreamKey) -> int:
        """The stream's last sequence as replayed (see `runs`)."""
        runs = self.runs.get(key)
        return 0 if runs is None else runs.last

    def sequence_before(self, key: StreamKey, start_ns: int) -> int:
        """The sequence before the stream's first tick at or after `start_ns` (where a
        replay from there starts: `start_sequence`); its last one if none is."""
        cached = self._before.get((key, start_ns))
        if cached is not None:
            return cached
        found = self.parts.get(key, [])
        before = self.last_sequence(key)
        for part in found:
            if part.last_ns < start_ns:
                continue
            runs = self.runs[key]
            if start_ns <= part.first_ns:
                before = runs.part_first[part.path] - 1
            else:  # inside this part: its times say where
                table = self._read(part, ["time", "sequence", "server_id"])
                times = table.column("time").cast(pa.int64()).to_numpy()
                at = int(np.searchsorted(times, start_ns, "left"))
                shifted = Cursor(runs, part).shift(
                    table.column("sequence").to_numpy(), table.column("server_id").to_pylist()
                )
                before = int(shifted[at]) - 1
            break
        if len(self._before) >= _SEQUENCE_CACHE:
            self._before.clear()
        self._before[(key, start_ns)] = before
        return before

    def _read(self, part: PartFile, columns: list[str]) -> pa.Table:
        with self.root.fs.open_input_file(part.path) as source:
            return pq.read_table(source, columns=columns)


def _matches(contract: ContractInfo, fields: dict, explicit: bool) -> bool:
    if contract.symbol.upper() != fields.get("symbol"):
        return False
    if fields.get("secType") == "CASH" and contract.currency != fields.get("currency"):
        return False
    if not explicit:
        return True
    expiry = fields.get("lastTradeDateOrContractMonth", "")
    return (
        contract.sec_type == fields.get("secType")
        and fields.get("exchange", contract.exchange) == contract.exchange
        and fields.get("currency", contract.currency) == contract.currency
        and contract.last_trade_date.startswith(expiry)
    )


def _read_footer(root: layout.StoreRoot, path: str) -> tuple[PartFile | None, ContractInfo]:
    """A part's index entry and contract from its footer (None for a part with no rows)."""
    key = _partition_key(path)
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


def _partition_key(path: str) -> StreamKey:
    """(contract_id, tick_type) from a part's hive path; ValueError when it has none."""
    values = dict(
        segment.split("=", 1) for segment in posixpath.dirname(path).split("/") if "=" in segment
    )
    try:
        return int(values["contract_id"]), TickType.parse(values["tick_type"])
    except (KeyError, ValueError, StreamError):
        raise ValueError("not under contract_id=N/tick_type=T/") from None


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
