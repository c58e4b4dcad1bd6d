"""Recorded market data with the true aggressor of every trade, loaded as tick frames.

A data set is a directory with `trades.csv` and `quotes.csv` (either may be compressed:
`.csv.xz`, `.csv.gz`). Two recorded samples ship inside the package (`recorded/`, with their
origin and licence in `recorded/README.md`), so every install can score classification on
real data; `$IBSTREAM_DATA` points the loader at another directory of data sets. Two layouts
are read, told apart by the trades header:

- databento (MBP-1 decoded to CSV): `ts_recv_ns`, `ts_event_ns`, price, size, side; quotes
  with bid_price, bid_size, ask_price, ask_size. Symbol and venue come from the directory
  name (`cme-esu4-2024-07-01` -> CME, ESU4).
- tardis: exchange, symbol, `timestamp` (exchange time) and `local_timestamp` (receive
  time), both microseconds, id, side, price, amount; quotes with ask/bid amount and price.

The tick frame is in arrival order by the receive stamp (`clock="receive"`: ts_recv_ns or
local_timestamp), the clock our server stamps live ticks with; a trade goes before a quote
with the same stamp, so only quotes that arrived strictly before a trade prevail for it.
`clock="exchange"` orders by the venue's event time instead, to see what the choice costs.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ibstream.client.frames import conform_ticks

DATA_ENV = "IBSTREAM_DATA"
BUNDLED = Path(__file__).resolve().parent / "recorded"
_SUFFIXES = (".csv", ".csv.xz", ".csv.gz")
CLOCKS = ("receive", "exchange")
_STAMPS = {  # layout -> (receive stamp, exchange stamp, nanoseconds per unit)
    "databento": ("ts_recv_ns", "ts_event_ns", 1),
    "tardis": ("local_timestamp", "timestamp", 1_000),
}


@dataclass(frozen=True)
class Score:
    """How a classification agreed with the true aggressor."""

    trades: int  # trades scored
    accuracy: float  # share classified as their true side (neutral counts as wrong)
    neutral: float  # share left neutral


@dataclass(frozen=True)
class Recorded:
    """One recorded data set as a tick frame, with the true side of each trade."""

    name: str
    symbol: str
    exchange: str
    contract_id: int  # a stable id made from exchange and symbol, not an IB conId
    clock: str
    ticks: pd.DataFrame  # the tick frame, arrival order
    truth: pd.Series  # "buy" / "sell" per trade, in the order of the frame's trade rows
    quoted: pd.Series  # per trade: arrived after the first quote and by the last one

    def score(self, trades: pd.DataFrame, *, quoted_only: bool = True) -> Score:
        """Score `classify(self.ticks, ...)`; by default only trades inside the quote window
        (outside it the prevailing quote is missing or stale)."""
        if len(trades) != len(self.truth):
            raise ValueError(
                f"{len(trades)} trades given, {self.name} has {len(self.truth)}: "
                "pass the output of classify(recorded.ticks)"
            )
        keep = self.quoted.to_numpy() if quoted_only else np.ones(len(trades), dtype=bool)
        side = trades["side"].astype(str).to_numpy()[keep]
        right = side == self.truth.to_numpy()[keep]
        n = int(keep.sum())
        return Score(
            n,
            float(right.mean()) if n else np.nan,
            float((side == "neutral").mean()) if n else np.nan,
        )


def data_dir() -> Path:
    """The recorded data: `$IBSTREAM_DATA` if set, else the samples shipped in the package."""
    env = os.environ.get(DATA_ENV)
    if not env:
        return BUNDLED
    path = Path(env)
    if not path.is_dir():
        raise FileNotFoundError(
            f"recorded market data not found ({DATA_ENV}={env}); point {DATA_ENV} at a "
            f"directory of data sets (<name>/trades.csv, quotes.csv), or unset it to use the "
            f"samples shipped with ibstream"
        )
    return path


def recorded_names() -> list[str]:
    """Names of the data sets in `data_dir()`."""
    return _names(data_dir())


def _names(folder: Path) -> list[str]:
    return sorted(
        {p.parent.name for p in folder.glob("*/trades.csv*") if _table(p.parent, "trades")}
    )


def _table(folder: Path, name: str) -> Path | None:
    """`name`.csv in `folder`, plain or compressed (pandas infers the compression)."""
    for suffix in _SUFFIXES:
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def load_recorded(path: str | Path, clock: str = "receive") -> Recorded:
    """A data set by directory or by name (looked up in `data_dir()`)."""
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}; use one of {', '.join(CLOCKS)}")
    folder = Path(path)
    if not folder.is_dir() and len(folder.parts) == 1:
        folder = data_dir() / folder
    trades_file, quotes_file = _table(folder, "trades"), _table(folder, "quotes")
    if trades_file is None or quotes_file is None:
        raise FileNotFoundError(
            f"no trades.csv and quotes.csv (plain, .xz or .gz) in data set {str(path)!r}; "
            f"the data sets of {folder.parent}: {', '.join(_names(folder.parent)) or 'none'}"
        )
    trades, quotes = pd.read_csv(trades_file), pd.read_csv(quotes_file)
    layout = _layout(trades)
    if layout == "tardis":
        trades = trades.rename(columns={"amount": "size"})
        quotes = quotes.rename(columns={"bid_amount": "bid_size", "ask_amount": "ask_size"})
        exchange, symbol = str(trades["exchange"].iloc[0]), str(trades["symbol"].iloc[0])
    else:
        venue, _, rest = re.sub(r"-\d{4}-\d{2}-\d{2}$", "", folder.name).partition("-")
        exchange, symbol = venue.upper(), (rest or venue).upper()
        trades = trades.assign(exchange=exchange)
    receive, event, unit = _STAMPS[layout]
    column = receive if clock == "receive" else event
    t_ns = trades[column].to_numpy(np.int64) * unit
    q_ns = quotes[column].to_numpy(np.int64) * unit
    contract_id = zlib.crc32(f"{exchange}:{symbol}".encode())
    ticks, trade_rows = _merge(trades, quotes, t_ns, q_ns, contract_id)
    truth = pd.Series(trades["side"].to_numpy()[trade_rows], name="truth").astype(str)
    stamps = t_ns[trade_rows]
    quoted = (stamps > q_ns.min()) & (stamps <= q_ns.max()) if len(q_ns) else stamps < 0
    return Recorded(
        folder.name,
        symbol,
        exchange,
        contract_id,
        clock,
        ticks,
        truth,
        pd.Series(quoted, name="quoted"),
    )


def _layout(trades: pd.DataFrame) -> str:
    for layout, (receive, event, _) in _STAMPS.items():
        if {receive, event} <= set(trades.columns):
            return layout
    raise ValueError(
        f"unknown recorded-data layout (trades.csv columns {list(trades.columns)}); expected "
        "ts_recv_ns/ts_event_ns (databento) or local_timestamp/timestamp (tardis)"
    )


def _merge(
    trades: pd.DataFrame, quotes: pd.DataFrame, t_ns: np.ndarray, q_ns: np.ndarray, contract_id: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """Trades and quotes in one tick frame by stamp (trade first on a tie, file order kept);
    also the trades.csv row of each trade row, in frame order."""
    nt, nq = len(trades), len(quotes)
    stamps = np.concatenate([t_ns, q_ns])
    order = np.lexsort((np.repeat([0, 1], [nt, nq]), stamps))  # stable
    nan_t, nan_q = np.full(nt, np.nan), np.full(nq, np.nan)

    def column(t: np.ndarray | None, q: np.ndarray | None) -> np.ndarray:
        return np.concatenate([nan_t if t is None else t, nan_q if q is None else q])[order]

    def floats(frame: pd.DataFrame, name: str) -> np.ndarray:
        return frame[name].to_numpy(np.float64)

    exchange = np.concatenate([trades["exchange"].to_numpy(object), np.full(nq, None)])[order]
    frame = pd.DataFrame(
        {
            "contract_id": np.full(nt + nq, contract_id, dtype=np.int64),
            "tick_type": np.where(order < nt, "last", "bid_ask"),
            "sequence": np.zeros(nt + nq, dtype=np.int64),
            "price": column(floats(trades, "price"), None),
            "size": column(floats(trades, "size"), None),
            "bid_price": column(None, floats(quotes, "bid_price")),
            "bid_size": column(None, floats(quotes, "bid_size")),
            "ask_price": column(None, floats(quotes, "ask_price")),
            "ask_size": column(None, floats(quotes, "ask_size")),
            "mid_price": np.full(nt + nq, np.nan),
            "exchange": exchange,
        },
        index=pd.to_datetime(stamps[order], unit="ns", utc=True),
    )
    return conform_ticks(frame), order[order < nt]
