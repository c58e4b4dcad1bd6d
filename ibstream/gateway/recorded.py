"""A recording as the simulator's market: `ibstream gateway --replay DIR`.

The tick store (read as `ibstream.store.open(DIR).ticks()` reads it) is played back to TWS
API clients in place of the synthetic `Market`: each contract of the recording is a contract of the
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
    import pandas as pd

log = logging.getLogger("ibstream.gateway")

# IB's tick-by-tick codes (feed.TICK_TYPES) of the store's tick type names
CODES = {"last": 1, "all_last": 2, "bid_ask": 3, "mid_point": 4}
LOOP_PAUSE_NS = 1_000_000_000  # recorded time between the last tick and the next lap
STALE_SLACK = 0.05  # seconds: ticks due before a feed's batch by more than this are missed
_FUT_HOURS = "{p}:1700-{d}:1600;{d}:1700-{n}:1600"


class NotARecording(ValueError):
    """The location holds no tick store parts."""


@dataclass(frozen=True, slots=True)
class RecordedTick:
    """One recorded tick as a feed event: its tickByTick fields after the request id."""

    code: int  # IB's tick-by-tick code (1 Last, 2 AllLast, 3 BidAsk, 4 MidPoint)
    fields: tuple  # (code, IB time, ...) as the tickByTick (99) message carries them


def check_speed(speed: object) -> None:
    if not (isinstance(speed, int | float) and 0 < speed < math.inf):
        raise ValueError(f"speed must be a number above 0, not {speed!r}")


class ReplayClock:
    """Where the replay is in recorded time: one clock for every contract of a recording."""

    def __init__(
        self, first_ns: int, last_ns: int, speed: float, loop: bool, held: bool = False
    ) -> None:
        check_speed(speed)
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

    def __init__(self, contract: SimContract, rows: RecordedRows, clock: ReplayClock) -> None:
        self.contract = contract
        self.clock = clock
        self.rate = 0.0  # the synthetic market's knob; a recording has its own pace
        self.last_quote = None  # nothing is sent on subscribe that was not recorded then
        self._rows = rows
        self._lap = 0
        self._cursor = 0

    def __len__(self) -> int:
        return len(self._rows.times)

    @property
    def trade_code(self) -> int:
        """The recorded trade stream that is the tape: AllLast (2) if recorded, else Last (1)."""
        return 2 if bool((self._rows.codes == 2).any()) else 1

    def advance(self, dt: float, now: float | None = None) -> list[RecordedTick]:
        """The ticks due since the feed's last batch, `dt` seconds ago."""
        position = self.clock.position()
        if position is None:
            return []
        lap, at = position
        times = self._rows.times
        out: list[RecordedTick] = []
        if lap != self._lap:
            if lap == self._lap + 1:  # the end of the previous lap first
                out += self._take(len(times))
            self._lap, self._cursor = lap, 0
        missed = int(at - (dt + STALE_SLACK) * self.clock.speed * 1e9)
        self._cursor = max(self._cursor, int(times.searchsorted(missed, "left")))
        out += self._take(int(times.searchsorted(at, "right")))
        return out

    def _take(self, end: int) -> list[RecordedTick]:
        start, self._cursor = self._cursor, max(self._cursor, end)
        return self._rows.events(start, end) if end > start else []


@dataclass(frozen=True)
class RecordedRows:
    """One contract's recorded ticks as columns, in arrival order."""

    times: np.ndarray  # receive stamps, ns
    codes: np.ndarray  # IB's tick-by-tick code of each tick's stream
    stamps: np.ndarray  # IB's time in whole seconds (the receive second where none)
    floats: np.ndarray  # (7, n) in the tick frame's FLOAT_FIELDS order
    exchange: np.ndarray  # str, "" where none
    conditions: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame) -> RecordedRows:
        """The columns of a tick frame's rows (`Store.ticks()`)."""
        import numpy as np
        import pandas as pd

        from ibstream.client.frames import FLOAT_FIELDS, NAT

        kinds = frame["tick_type"].cat
        lut = np.array([CODES[name] for name in kinds.categories], np.int8)
        times = pd.DatetimeIndex(frame.index).asi8
        ib = pd.DatetimeIndex(frame["ib_time"]).asi8
        stamps = np.where(ib == NAT, times, ib) // 1_000_000_000

        def text(name: str) -> np.ndarray:
            return frame[name].to_numpy(dtype=object, na_value="")

        return cls(
            times, lut[kinds.codes.to_numpy()], stamps,
            frame[list(FLOAT_FIELDS)].to_numpy(np.float64).T, text("exchange"), text("conditions"),
        )  # fmt: skip

    def events(self, start: int, end: int) -> list[RecordedTick]:
        """Feed events of rows start..end: the tickByTick fields of each."""
        span = slice(start, end)
        stamps = self.stamps[span].tolist()
        price, size, bid, bid_size, ask, ask_size, mid = self.floats[:, span].tolist()
        exchange, conditions = self.exchange[span].tolist(), self.conditions[span].tolist()
        out = []
        for i, code in enumerate(self.codes[span].tolist()):
            if code <= 2:
                fields = (code, stamps[i], price[i], size[i], 0, exchange[i], conditions[i])
            elif code == 3:
                fields = (3, stamps[i], bid[i], ask[i], bid_size[i], ask_size[i], 0)
            else:
                fields = (4, stamps[i], mid[i])
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
    """Read a tick store (a directory or object-store URI, through `ibstream.store`) for
    replay; `NotARecording` saying what to do when it is none or holds no ticks."""
    from ibstream.store.errors import StoreError
    from ibstream.store.reader import open as open_store

    check_speed(speed)
    try:
        store = open_store(location)
        frame = store.ticks()
        details = store.contract_infos()
    except StoreError as exc:
        raise NotARecording(exc.message) from None
    if frame.empty:
        raise NotARecording(
            f"{location} is not a recording yet: it holds no ticks; give the directory "
            "`ibstream serve --record` wrote"
        )
    times = frame.index.asi8
    clock = ReplayClock(int(times[0]), int(times[-1]), speed, loop, held)
    markets, contracts = {}, []
    for con_id, rows in frame.groupby("contract_id", sort=True):
        contract = sim_contract(details.get(int(con_id)), int(con_id))
        contracts.append(contract)
        markets[contract.con_id] = RecordedMarket(contract, RecordedRows.of(rows), clock)
    day = datetime.fromtimestamp(clock.first_ns // 1_000_000_000, UTC).date()
    return Recording(store.root.uri, tuple(contracts), markets, clock, day)


def sim_contract(info: dict | None, con_id: int) -> SimContract:
    """The simulator's contract of a recorded one: its details as recorded (parts without
    them give a stock on SMART named by its conId)."""
    info = info or {}
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
