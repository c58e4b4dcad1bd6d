"""The tick frame: the one pandas schema that every path loading ticks returns.

`Client.collect`, `TickBuffer.to_frame()`, the recorded-data loader and `frame_from_payloads`
all build it here, so research code sees one shape whatever the source:

=============  ======================  ================================================
column         dtype                   meaning
=============  ======================  ================================================
index `time`   datetime64[ns, UTC]     the server's nanosecond receive stamp (recv_ns)
contract_id    int64                   IB conId
tick_type      category                last, all_last, bid_ask, mid_point (unordered)
sequence       int64                   per-stream sequence; 0 where unknown
price, size    float64                 trades (last, all_last); NaN on other ticks
bid_price,     float64                 quotes (bid_ask); NaN on other ticks
bid_size,
ask_price,
ask_size
mid_price      float64                 mid_point ticks; NaN on other ticks
exchange       string (StringDtype)    trades; <NA> where missing
conditions     string (StringDtype)    trades: IB's special conditions (odd lot,
                                       off-exchange print ...); <NA> where none
ib_time        datetime64[ns, UTC]     IB's own tick time (one-second resolution); NaT
                                       where the source gave none
=============  ======================  ================================================

Rows keep arrival order, duplicate stamps included: IB's one-second tick times cannot order
ticks across streams, arrival can. A frame of subscribed ticks (collect, a client's buffer)
also says which contracts it holds: `frame.attrs["contracts"]`, one dict per contract
(`contract_id`, `symbol`, `local_symbol`, `exchange`, `currency`, `min_tick`, `multiplier`,
`last_trade_date` ...), kept by Parquet (pyarrow), carried by `classify` and read by
`footprint` for its default tick size. The frame round-trips through Parquet unchanged,
except that an empty frame loses its tick_type categories (Parquet keeps a dictionary only
with data); `conform_ticks` restores the schema of a frame read back from a file (a file
written before `conditions` / `ib_time` existed gets them empty).

Every source becomes `TickColumns` (typed numpy columns) first, then the frame; rows and
payloads take a fast Arrow path and fall back, for input Arrow rejects, to a Python path
that is lenient about number types and names the first bad row (`TickRowError`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from ibstream.errors import StreamError
from ibstream.model import TickType
from ibstream.timeindex import utc_index

INT_FIELDS = ("contract_id", "sequence")
FLOAT_FIELDS = ("price", "size", "bid_price", "bid_size", "ask_price", "ask_size", "mid_price")
TICK_TYPE_DTYPE = pd.CategoricalDtype([t.value for t in TickType], ordered=False)
TICK_COLUMNS: dict[str, Any] = {
    "contract_id": np.dtype(np.int64),
    "tick_type": TICK_TYPE_DTYPE,
    "sequence": np.dtype(np.int64),
    **dict.fromkeys(FLOAT_FIELDS, np.dtype(np.float64)),
    "exchange": pd.StringDtype(),
    "conditions": pd.StringDtype(),
    "ib_time": pd.DatetimeTZDtype("ns", "UTC"),
}
ADDED_COLUMNS = ("conditions", "ib_time")  # absent from older files: conform_ticks adds them
NAT = np.iinfo(np.int64).min  # NaT as int64 nanoseconds
_CODES = {name: i for i, t in enumerate(TickType) for name in (t.value, t.ib_name)}
TICK_TYPE_CODES = _CODES  # our and IB's tick type names -> tick_type category codes
TICK_TYPE_NAMES = frozenset(_CODES)  # our names and IB's, exactly as spelled on the wire
_REQUIRED = ("recv_ns", "contract_id", "tick_type")
_WIRE_DATA = pa.struct(
    [("recv_ns", pa.int64()), ("contract_id", pa.int64()), ("tick_type", pa.string())]
    + [("sequence", pa.int64())]
    + [(name, pa.float64()) for name in FLOAT_FIELDS]
    + [("exchange", pa.string()), ("conditions", pa.string()), ("ib_time", pa.int64())]
)
_WIRE = pa.schema([("type", pa.string()), ("data", _WIRE_DATA)])
_PARSE = pa_json.ParseOptions(explicit_schema=_WIRE, unexpected_field_behavior="ignore")
_PARSE_MULTILINE = pa_json.ParseOptions(
    explicit_schema=_WIRE, unexpected_field_behavior="ignore", newlines_in_values=True
)


class TickRowError(ValueError):
    """A tick row (or message) that does not fit the schema; `row` is its position."""

    def __init__(self, row: int, field: str | None, problem: str) -> None:
        where = f"tick row {row}" + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {problem}")
        self.row, self.field = row, field


@dataclass(frozen=True, slots=True)
class TickColumns:
    """Ticks as typed numpy columns: the step between every source and the frame, and what
    `TickBuffer` keeps in its ring. `ints` is (2, n) contract_id, sequence; `floats` is
    (7, n) in FLOAT_FIELDS order; `codes` are tick_type category codes; `exchange` and
    `conditions` hold str or None; `ib_ns` is IB's time in nanoseconds (NAT where none)."""

    recv_ns: np.ndarray
    codes: np.ndarray
    ints: np.ndarray
    floats: np.ndarray
    exchange: np.ndarray
    conditions: np.ndarray
    ib_ns: np.ndarray

    def __len__(self) -> int:
        return len(self.recv_ns)

    def __getitem__(self, index: slice) -> TickColumns:
        return TickColumns(*(a[..., index] for a in self.arrays()))

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (
            self.recv_ns,
            self.codes,
            self.ints,
            self.floats,
            self.exchange,
            self.conditions,
            self.ib_ns,
        )

    @staticmethod
    def empty(n: int = 0) -> TickColumns:
        """Zeroed columns for `n` ticks (a ring to fill)."""
        return TickColumns(
            np.zeros(n, np.int64),
            np.zeros(n, np.int8),
            np.zeros((len(INT_FIELDS), n), np.int64),
            np.full((len(FLOAT_FIELDS), n), np.nan),
            np.full(n, None, dtype=object),
            np.full(n, None, dtype=object),
            np.full(n, NAT, dtype=np.int64),
        )

    @staticmethod
    def concat(parts: Sequence[TickColumns]) -> TickColumns:
        """The parts end to end, always as new arrays."""
        if not parts:
            return TickColumns.empty()
        return TickColumns(
            *(np.concatenate(a, axis=-1) for a in zip(*map(TickColumns.arrays, parts), strict=True))
        )

    def to_frame(self) -> pd.DataFrame:
        """The tick frame; it takes these arrays over (no copy), so the caller must own them."""
        return assemble(
            self.recv_ns, self.codes, self.ints, self.floats, _strings(self.exchange),
            _strings(self.conditions), self.ib_ns,
        )  # fmt: skip


def assemble(
    recv_ns: np.ndarray,
    codes: np.ndarray,
    ints: np.ndarray,
    floats: np.ndarray,
    exchange: pd.api.extensions.ExtensionArray,
    conditions: pd.api.extensions.ExtensionArray,
    ib_ns: np.ndarray,
) -> pd.DataFrame:
    """The tick frame of typed columns (as `TickColumns` holds them, the text columns already
    extension arrays), taken over without a copy."""
    data = {
        "contract_id": ints[0],
        "tick_type": pd.Categorical.from_codes(codes, dtype=TICK_TYPE_DTYPE),
        "sequence": ints[1],
        **dict(zip(FLOAT_FIELDS, floats, strict=True)),
        "exchange": exchange,
        "conditions": conditions,
        "ib_time": utc_index(ib_ns, None),
    }
    return pd.DataFrame(data, index=utc_index(recv_ns), copy=False)


def _strings(values: np.ndarray) -> pd.api.extensions.ExtensionArray:
    array = pa.array(values, type=pa.string(), from_pandas=True)
    return pd.array(array, dtype=pd.StringDtype())


def empty_ticks() -> pd.DataFrame:
    """A tick frame with no rows (every dtype in place, so concat and Parquet keep them)."""
    return TickColumns.empty().to_frame()


def ticks_to_frame(rows: Iterable[Mapping]) -> pd.DataFrame:
    """The tick frame from the `data` objects of tick messages (nulls omitted, as on the wire).

    tick_type may be our name or IB's. A row that does not fit (unknown tick type; missing
    recv_ns, contract_id or tick_type; a value that is not a number) raises `TickRowError`.
    """
    return columns_from_rows(rows if isinstance(rows, list) else list(rows)).to_frame()


def frame_from_payloads(payloads: Sequence[bytes | str]) -> pd.DataFrame:
    """The tick frame straight from tick messages as received (one JSON message each).

    pyarrow parses the whole batch in C++ threads against the wire schema, faster than any
    per-message parse in Python; a batch it rejects goes through orjson and
    `ticks_to_frame`, whose error names the bad message.
    """
    if not len(payloads):
        return empty_ticks()
    joined = "\n".join(payloads).encode() if isinstance(payloads[0], str) else b"\n".join(payloads)
    parse = _PARSE if joined.count(b"\n") == len(payloads) - 1 else _PARSE_MULTILINE
    try:
        table = pa_json.read_json(pa.BufferReader(joined), parse_options=parse)
    except pa.ArrowInvalid:
        table = None
    if table is not None and table.num_rows == len(payloads):
        is_tick = pc.fill_null(pc.equal(table.column("type"), "tick"), False)
        columns = columns_from_struct(table.column("data")) if pc.all(is_tick).as_py() else None
        if columns is not None:
            return columns.to_frame()
    return ticks_to_frame(_decode(payloads))


def conform_ticks(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` cast to the tick schema: for frames read back from files (Parquet, CSV).
    Columns added to the schema later (`ADDED_COLUMNS`) are filled in empty if absent."""
    missing = [n for n in TICK_COLUMNS if n not in frame.columns and n not in ADDED_COLUMNS]
    if missing:
        raise ValueError(f"not a tick frame: missing columns {missing}")
    added = {
        n: pd.Series(None, index=frame.index, dtype=TICK_COLUMNS[n])
        for n in ADDED_COLUMNS
        if n not in frame.columns
    }
    out = frame.assign(**added)[list(TICK_COLUMNS)].astype(TICK_COLUMNS)
    out.attrs = dict(frame.attrs)
    index = pd.DatetimeIndex(frame.index, name="time").as_unit("ns")
    out.index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return out


def columns_from_rows(rows: Sequence[Mapping], first_row: int = 0) -> TickColumns:
    """Typed columns from wire `data` rows: Arrow converts the batch in C++; rows it rejects
    take the Python path. `first_row` numbers the rows in errors."""
    try:
        columns = columns_from_struct(pa.array(rows, type=_WIRE_DATA))
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        columns = None
    return columns if columns is not None else _columns_in_python(rows, first_row)


def columns_from_struct(data: pa.StructArray | pa.ChunkedArray) -> TickColumns | None:
    """Typed columns from Arrow `data` structs, or None if some row needs the Python path
    (a required field missing, a tick type not in our or IB's spelling)."""
    if isinstance(data, pa.ChunkedArray):
        data = data.combine_chunks()
    fields = dict(zip(_WIRE_DATA.names, data.flatten(), strict=True))
    if any(fields[name].null_count for name in _REQUIRED):
        return None
    tick_types = fields["tick_type"].dictionary_encode()
    lut = [_CODES.get(name, -1) for name in tick_types.dictionary.to_pylist()]
    if -1 in lut:
        return None
    ints = np.stack([fields["contract_id"].to_numpy(), pc.fill_null(fields["sequence"], 0)])
    try:
        ib_ns = pc.fill_null(pc.multiply_checked(fields["ib_time"], 1_000_000_000), NAT)
    except pa.ArrowInvalid:  # seconds beyond what nanoseconds hold: the Python path says so
        return None
    return TickColumns(
        np.array(fields["recv_ns"].to_numpy()),
        np.array(lut, dtype=np.int8)[tick_types.indices.to_numpy()],
        ints,
        np.stack([fields[name].to_numpy(zero_copy_only=False) for name in FLOAT_FIELDS]),
        _interned(fields["exchange"]),
        _interned(fields["conditions"]),
        np.array(ib_ns.to_numpy()),
    )


def _interned(strings: pa.Array) -> np.ndarray:
    """An object array of str / None with one str object per distinct value."""
    encoded = strings.dictionary_encode()
    names = np.array([*encoded.dictionary.to_pylist(), None], dtype=object)
    return names[pc.fill_null(encoded.indices, -1).to_numpy()]


def tick_type_code(value: object, row: int) -> int:
    """Category code of a tick type in our spelling or IB's, else `TickRowError`."""
    try:
        return _CODES[value]
    except (KeyError, TypeError):
        pass
    if value is None:
        raise TickRowError(row, "tick_type", "is missing")
    try:
        return _CODES[TickType.parse(value).value]
    except StreamError as exc:
        raise TickRowError(row, "tick_type", exc.message) from None


def _columns_in_python(rows: Sequence[Mapping], first_row: int) -> TickColumns:
    """Column lists built in Python: slower, lenient about number types (as numpy is), and
    the first row that does not fit raises `TickRowError`."""
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TickRowError(first_row + i, None, f"is a {type(row).__name__}, not a mapping")
        for name in ("recv_ns", "contract_id"):
            if row.get(name) is None:
                raise TickRowError(first_row + i, name, "is required but missing")
    codes = [tick_type_code(row.get("tick_type"), first_row + i) for i, row in enumerate(rows)]

    def strings(name: str) -> np.ndarray:
        values = [row.get(name) for row in rows]
        for i, value in enumerate(values):
            if value is not None and not isinstance(value, str):
                raise TickRowError(first_row + i, name, f"{value!r} is not a string")
        return np.array(values, dtype=object).reshape(len(rows))

    def numbers(name: str, dtype: type, default: object = None) -> np.ndarray:
        values = [row.get(name) for row in rows]
        if default is not None:
            values = [default if value is None else value for value in values]
        try:
            return np.array(values, dtype=dtype).reshape(len(rows))
        except (TypeError, ValueError, OverflowError):
            for i, value in enumerate(values):
                try:
                    np.array(value, dtype=dtype).reshape(1)
                except (TypeError, ValueError, OverflowError):
                    raise TickRowError(first_row + i, name, f"{value!r} is not a number") from None
            raise

    return TickColumns(
        numbers("recv_ns", np.int64),
        np.array(codes, dtype=np.int8),
        np.stack([numbers("contract_id", np.int64), numbers("sequence", np.int64, 0)]),
        np.stack([numbers(name, np.float64) for name in FLOAT_FIELDS]),
        strings("exchange"),
        strings("conditions"),
        _ib_ns(numbers("ib_time", np.float64), first_row),
    )


def _ib_ns(seconds: np.ndarray, first_row: int) -> np.ndarray:
    """IB's epoch seconds (NaN: none) as int64 nanoseconds, NAT where none."""
    bad = ~np.isnan(seconds) & ~((seconds >= 0) & (seconds < 2**63 / 1e9))
    if bad.any():
        i = int(bad.argmax())
        raise TickRowError(first_row + i, "ib_time", f"{seconds[i]!r} is not epoch seconds")
    out = np.full(len(seconds), NAT, dtype=np.int64)
    known = ~np.isnan(seconds)
    out[known] = seconds[known].astype(np.int64) * 1_000_000_000
    return out


def _decode(payloads: Sequence[bytes | str]) -> list[dict]:
    """The data objects of tick messages, parsed one by one (the path that explains errors)."""
    rows = []
    for i, payload in enumerate(payloads):
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise TickRowError(i, None, f"is not JSON ({exc})") from None
        kind = message.get("type") if isinstance(message, dict) else type(message).__name__
        if kind != "tick" or not isinstance(message.get("data"), dict):
            raise TickRowError(i, None, f"is not a tick message with data (type {kind!r})")
        rows.append(message["data"])
    return rows


def __getattr__(name: str) -> Any:
    """FrameBuilder and TickBuffer live in buffer.py, which builds on this module."""
    if name in ("FrameBuilder", "TickBuffer"):
        from ibstream.client import buffer

        return getattr(buffer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
