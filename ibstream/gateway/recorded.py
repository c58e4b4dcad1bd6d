"""A recording as the simulator's market: `ibstream gateway --replay DIR`.

The tick store's parts (see `ibstream.store.layout`) are played back to TWS API clients in
place of the synthetic `Market`: each contract of the recording is a contract of the
simulator (its details from the parts' key-value metadata), and each recorded stream answers
`reqTickByTickData` of its tick type (BidAsk, Last, AllLast, MidPoint as recorded, IB's time
from `ib_time`). A tick type the recording lacks for a contract sends nothing, as IB sends
nothing for a contract that does not trade.

One `ReplayClock` drives every contract, so ticks keep their recorded order across
contracts and tick types; it starts at the first subscription (or at `release()` when held)
and runs `speed` times as fast as the recording. Like a live market, a stream that nobody
subscribed while its ticks were due does not get them later. Ticks go out in the feed's
batches (`feed.BATCH_INTERVAL`), so spacing is the recorded one to within a batch.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from ibstream.gateway.instrument import SimContract

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

log = logging.getLogger("ibstream.gateway")

# IB's tick-by-tick codes (feed.TICK_TYPES) of the store's tick type names
CODES = {"last": 1, "all_last": 2, "bid_ask": 3, "mid_point": 4}
LOOP_PAUSE_NS = 1_000_000_000  # recorded time between the last tick and the next lap
STALE_SLACK = 0.05  # seconds: ticks due before a feed's batch by more than this are missed
_COLUMNS = [
    "time", "ib_time", "price", "size", "bid_price", "bid_size", "ask_price", "ask_size",
    "mid_price", "exchange", "conditions", "contract_id", "tick_type", "symbol",
]  # fmt: skip
_FUT_HOURS = "{p}:1700-{d}:1600;{d}:1700-{n}:1600"


class NotARecording(ValueError):
    """The location holds no tick store parts."""


@dataclass(frozen=True, slots=True)
class RecordedTick:
    """One recorded tick as a feed event: its tickByTick fields after the request id."""

    code: int  # IB's tick-by-tick code (1 Last, 2 AllLast, 3 BidAsk, 4 MidPoint)
    fields: tuple  # (code, IB time, ...) as the tickByTick (99) message carries them


class ReplayClock:
    """Where the replay is in recorded time: one clock for every contract of a recording."""

    def __init__(
        self, first_ns: int, last_ns: int, speed: float, loop: bool, held: bool = False
    ) -> None:
        if not (isinstance(speed, int | float) and 0 < speed < math.inf):
            raise ValueError(f"speed must be a number above 0, not {speed!r}")
        self.first_ns, self.last_ns = first_ns, last_ns
        self.speed, self.loop = float(speed), loop
        self.held = held
        self._started: float | None = None
        self._completed_said = False

    def hold(self) -> None:
        """Do not start before `release()` (a test subscribes every stream first)."""
        self.held = True

    def release(self) -> None:
        self.held = False

    def position(self) -> tuple[int, int] | None:
        """(lap, recorded ns) now; None while held. The first call starts the clock."""
        if self.held and self._started is None:
            return None
        now = time.monotonic()
        if self._started is None:
            self._started = now
            log.info("replay started at speed %g", self.speed)
        elapsed = int((now - self._started) * self.speed * 1e9)
        if not self.loop:
            if not self._completed_said and self.first_ns + elapsed > self.last_ns:
                self._completed_said = True
                log.info("replay completed: every recorded tick was due")
            return 0, self.first_ns + elapsed
        lap, offset = divmod(elapsed, self.last_ns - self.first_ns + LOOP_PAUSE_NS)
        return lap, self.first_ns + offset


class RecordedMarket:
    """One contract's recorded ticks, handed to its `Feed` as they fall due."""

    def __init__(self, contract: SimContract, table: pa.Table, clock: ReplayClock) -> None:
        import numpy as np

        self.contract = contract
        self.clock = clock
        self.rate = 0.0  # the synthetic market's knob; a recording has its own pace
        self.last_quote = None  # nothing is sent on subscribe that was not recorded then
        self._table = table  # sorted by receive time
        self._times: np.ndarray = np.asarray(table.column("time").cast("int64").to_numpy())
        self._lap = 0
        self._cursor = 0

    def __len__(self) -> int:
        return len(self._times)

    def advance(self, dt: float, now: float | None = None) -> list[RecordedTick]:
        """The ticks due since the feed's last batch, `dt` seconds ago."""
        position = self.clock.position()
        if position is None:
            return []
        lap, at = position
        out: list[RecordedTick] = []
        if lap != self._lap:
            if lap == self._lap + 1:  # the end of the previous lap first
                out += self._take(len(self._times))
            self._lap, self._cursor = lap, 0
        missed = int(at - (dt + STALE_SLACK) * self.clock.speed * 1e9)
        skip = int(self._times.searchsorted(missed, "left"))
        self._cursor = max(self._cursor, skip)
        out += self._take(int(self._times.searchsorted(at, "right")))
        return out

    def _take(self, end: int) -> list[RecordedTick]:
        start, self._cursor = self._cursor, max(self._cursor, end)
        if end <= start:
            return []
        return events(self._table.slice(start, end - start))


def events(table: pa.Table) -> list[RecordedTick]:
    """Feed events of recorded rows, IB's time in whole seconds (the receive second where
    the recording has none)."""
    cols = {name: table.column(name).to_pylist() for name in _COLUMNS[2:11]}
    kinds = table.column("tick_type").to_pylist()
    recv = table.column("time").cast("int64").to_pylist()
    ib = table.column("ib_time").cast("int64").to_pylist()
    out = []
    for i, kind in enumerate(kinds):
        code = CODES[kind]
        stamp = ib[i] // 1_000_000_000 if ib[i] is not None else recv[i] // 1_000_000_000
        if code <= 2:
            fields = (
                code, stamp, cols["price"][i], cols["size"][i], 0, cols["exchange"][i] or "",
                cols["conditions"][i] or "",
            )  # fmt: skip
        elif code == 3:
            fields = (
                3, stamp, cols["bid_price"][i], cols["ask_price"][i], cols["bid_size"][i],
                cols["ask_size"][i], 0,
            )  # fmt: skip
        else:
            fields = (4, stamp, cols["mid_price"][i])
        out.append(RecordedTick(code, fields))
    return out


@dataclass(frozen=True)
class Recording:
    """A tick store read for replay: its contracts, a market each, and the one clock."""

    location: str
    contracts: tuple[SimContract, ...]
    markets: dict[int, RecordedMarket]
    clock: ReplayClock
    day: date  # the UTC day of the first tick: the simulator's session date

    @property
    def ticks(self) -> int:
        return sum(map(len, self.markets.values()))


def load_recording(
    location: object, *, speed: float = 1.0, loop: bool = False, held: bool = False
) -> Recording:
    """Read a tick store (a directory or object-store URI) for replay; `NotARecording` with
    what to do when it holds no tick parts."""
    import pyarrow.compute as pc
    import pyarrow.fs as pafs

    from ibstream.store import layout

    root = layout.open_root(location)
    hint = f"{location} is not a recording (no ticks/date=.../*.parquet under it); record one "
    hint += "with `ibstream serve --record DIR`"
    kind = root.fs.get_file_info(root.path(layout.TICKS)).type
    if kind != pafs.FileType.Directory:
        raise NotARecording(hint)
    dataset = layout.ticks_dataset(root)
    if not dataset.files:
        raise NotARecording(hint)
    table = dataset.to_table(columns=_COLUMNS)
    table = table.take(pc.sort_indices(table, [("time", "ascending")]))
    details = _recorded_contracts(root, dataset.files)
    clock = ReplayClock(
        table.column("time")[0].value, table.column("time")[-1].value, speed, loop, held
    )
    ids = table.column("contract_id")
    markets, contracts = {}, []
    for con_id in sorted(set(ids.to_pylist())):
        rows = table.filter(pc.equal(ids, con_id))
        contract = sim_contract(details.get(con_id), con_id, rows)
        contracts.append(contract)
        markets[con_id] = RecordedMarket(contract, rows, clock)
    day = datetime.fromtimestamp(clock.first_ns // 1_000_000_000, UTC).date()
    return Recording(root.uri, tuple(contracts), markets, clock, day)


def _recorded_contracts(root: object, files: list[str]) -> dict[int, dict]:
    """conId -> the `contract` of the parts' key-value metadata (the latest file's wins)."""
    import pyarrow.parquet as pq

    from ibstream.store import layout

    found: dict[int, dict] = {}
    for path in files:
        meta = layout.read_file_metadata(pq.read_schema(path, filesystem=root.fs))  # type: ignore[attr-defined]
        contract = meta.get("contract")
        if isinstance(contract, dict) and "contract_id" in contract:
            found[int(contract["contract_id"])] = contract
    return found


def sim_contract(info: dict | None, con_id: int, rows: pa.Table) -> SimContract:
    """The simulator's contract of a recorded one: its details as recorded (a part without
    metadata gives its symbol columns and a stock on SMART)."""
    if info is None:
        info = {"contract_id": con_id, "symbol": rows.column("symbol")[0].as_py() or con_id}
    symbol = str(info.get("symbol", con_id))
    sec_type = str(info.get("sec_type", "STK"))
    exchange = str(info.get("exchange", "SMART"))
    extra = {"trading_hours": _FUT_HOURS, "time_zone_id": "US/Central"} if sec_type == "FUT" else {}
    return SimContract(
        con_id=con_id, symbol=symbol, sec_type=sec_type, exchange=exchange,
        primary_exchange=exchange, currency=str(info.get("currency", "USD")),
        local_symbol=str(info.get("local_symbol", symbol)), trading_class=symbol,
        last_trade_date=str(info.get("last_trade_date", "")),
        multiplier=str(info.get("multiplier", "")), min_tick=float(info.get("min_tick", 0.01)),
        long_name=str(info.get("description", "")), start_price=0.0, trade_size=1.0,
        quote_size=1.0, venues=(exchange,), market_name=symbol, valid_exchanges=exchange,
        **extra,
    )  # fmt: skip
