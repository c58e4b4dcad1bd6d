"""One stream's ticks as the recorder keeps them between flushes: typed columns
(`array.array`), one append per field a tick type carries.

Nothing here is an object per tick, so nothing the cyclic GC tracks: kept `Tick` objects
made its collections cost live streaming a quarter of its rate at 75 k ticks/s. At a flush
the columns become Arrow arrays without a pass in Python (numpy views of their buffers).
"""

from __future__ import annotations

import math
from array import array

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ibstream.model import Tick
from ibstream.store import layout

NO_TIME = -1  # IB gave no time (`ib_time` None)
FLOATS = ("price", "size", "bid_price", "bid_size", "ask_price", "ask_size", "mid_price")
CARRIED = {  # the numeric fields each tick type fills (the others stay null)
    "last": ("price", "size"),
    "all_last": ("price", "size"),
    "bid_ask": ("bid_price", "bid_size", "ask_price", "ask_size"),
    "mid_point": ("mid_price",),
}
TEXT = frozenset({"last", "all_last"})  # tick types with exchange and conditions


class StreamColumns:
    """A stream's kept ticks; `add(tick)` is called by the hub's thread for each."""

    __slots__ = ("tick_type", "recv", "ib", "numbers", "exchange", "conditions", "_getters")

    def __init__(self, tick_type: str) -> None:
        self.tick_type = tick_type
        self.recv = array("q")
        self.ib = array("q")
        names = CARRIED.get(tick_type, FLOATS)
        self.numbers = {name: array("d") for name in names}
        self.exchange: list[str | None] = []
        self.conditions: list[str | None] = []
        self._getters = [(self.numbers[n].append, n) for n in names]

    def __len__(self) -> int:
        return len(self.recv)

    def add(self, tick: Tick) -> None:
        self.recv.append(tick.recv_ns)
        ib = tick.ib_time
        self.ib.append(NO_TIME if ib is None else ib)
        for append, name in self._getters:
            value = getattr(tick, name)
            append(math.nan if value is None else value)
        if self.tick_type in TEXT:
            self.exchange.append(tick.exchange)
            self.conditions.append(tick.conditions)

    def drop_first(self, count: int) -> None:
        """Forget the oldest `count` ticks (a store that cannot be written, past its bound)."""
        for column in (self.recv, self.ib, *self.numbers.values()):
            del column[:count]
        del self.exchange[:count], self.conditions[:count]

    def table(self, first_sequence: int) -> pa.Table:
        """The kept ticks as a part table's columns (before their origin is added)."""
        n = len(self.recv)
        # copies, not views: a view would pin the arrays (no append or delete while it lives)
        recv = np.frombuffer(self.recv, np.int64).copy()
        ib = np.frombuffer(self.ib, np.int64).copy()
        arrays = {
            "time": pa.array(recv).cast(layout.TIME),
            "sequence": pa.array(np.arange(first_sequence, first_sequence + n, dtype=np.int64)),
        }
        for name in FLOATS:
            if name in self.numbers:
                values = np.frombuffer(self.numbers[name], np.float64).copy()
                arrays[name] = pa.array(values, mask=np.isnan(values))
            else:
                arrays[name] = pa.nulls(n, pa.float64())
        for name, values in (("exchange", self.exchange), ("conditions", self.conditions)):
            arrays[name] = pa.array(values, pa.string()) if values else pa.nulls(n, pa.string())
        seconds = pa.array(ib, mask=ib == NO_TIME)
        arrays["ib_time"] = pc.multiply(seconds, 1_000_000_000).cast(layout.TIME)
        return pa.table(arrays)
