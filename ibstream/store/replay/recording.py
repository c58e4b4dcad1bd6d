"""A recording as replay sees it: its tick parts indexed per stream from their footers.

Opening reads only Parquet footers (row counts, the time and sequence statistics, the
contract in the key-value metadata), never the ticks, so a week of recordings opens in the
time its file listing takes. A part that cannot be read is skipped with a warning naming it;
a location that is not a recording is a `RecordingError` saying what was found instead.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ibstream.errors import ErrorCode, StreamError
from ibstream.ib.contracts import parse_spec
from ibstream.model import ContractInfo, TickType
from ibstream.protocol.times import iso_ns
from ibstream.store import catalog, layout
from ibstream.store.replay.footers import PartFile, StreamKey, read_footer
from ibstream.store.replay.runs import Cursor, Runs

log = logging.getLogger(__name__)
_SEQUENCE_CACHE = 256


class RecordingError(ValueError):
    """The location is not a recording that can be replayed (the message says why)."""


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
        """Index the recording at `location` (RecordingError when it is none)."""
        try:
            root = layout.open_root(location)
            return cls._scan(root)
        except (OSError, pa.ArrowException) as exc:  # unreadable, a bucket not there ...
            raise RecordingError(f"{location} cannot be read ({exc})") from None

    @classmethod
    def _scan(cls, root: layout.StoreRoot) -> Recording:
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
        for listed in catalog.list_parts(root):  # journals of a compaction under way honoured
            try:
                key = (listed.contract_id, TickType.parse(listed.tick_type))
                part, contract = read_footer(root, listed.path, key)
            except (OSError, pa.ArrowException, ValueError, KeyError, StreamError) as exc:
                log.warning("skipping unreadable part %s (%s)", listed.path, exc)
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
