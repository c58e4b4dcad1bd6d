"""Recordings for the store tests, made the way the recorder makes them (`build_parts` +
`write_part`, one part per flush) from the real ticks of the bundled recorded samples, and
the tick frame `collect` would have built from the same ticks (their wire `data` rows)."""

from __future__ import annotations

import pandas as pd

from ibstream.client.frames import ticks_to_frame
from ibstream.datasets import load_recorded
from ibstream.model import ContractInfo, Tick, TickType
from ibstream.store import layout, parts

SERVER = "s1"
ES = ContractInfo(2006995044, "ES", "FUT", "CME", "USD", "ESU4", 0.25, multiplier="50")
BTC = ContractInfo(1347019244, "BTC", "CRYPTO", "BINANCE", "USDT", "BTCUSDT", 0.1)
SAMPLES = {
    ES.contract_id: ("cme-esu4-2024-07-01", ES),
    BTC.contract_id: ("binance-futures-btcusdt-2020-02-22", BTC),
}
_FIELDS = ("price", "size", "bid_price", "bid_size", "ask_price", "ask_size", "mid_price")


def sample_ticks(contract: ContractInfo, limit: int | None = None) -> list[Tick]:
    """The sample's ticks in arrival order as the source hands them to the hub."""
    name, _ = SAMPLES[contract.contract_id]
    frame = load_recorded(name).ticks.iloc[:limit]
    out = []
    for time, row in zip(frame.index.asi8, frame.itertuples(index=False), strict=True):
        values = {
            f: (None if pd.isna(getattr(row, f)) else float(getattr(row, f))) for f in _FIELDS
        }
        exchange = None if pd.isna(row.exchange) else row.exchange
        ib_time = int(time // 1_000_000_000)
        out.append(
            Tick(
                contract.contract_id,
                TickType(row.tick_type),
                int(time),
                **values,
                exchange=exchange,
                ib_time=ib_time,
            )
        )
    return out


def record(
    location: object,
    contracts: tuple[ContractInfo, ...] = (ES, BTC),
    flush: int = 400,
    limit: int | None = 3000,
    server_id: str = SERVER,
) -> pd.DataFrame:
    """Write a recording (a part per `flush` ticks of each stream) and return the tick frame
    collect would have built from the same ticks, in arrival order."""
    root = layout.open_root(location)
    rows = []
    for contract in contracts:
        ticks = sample_ticks(contract, limit)
        for kind in dict.fromkeys(t.tick_type for t in ticks):
            stream = [t for t in ticks if t.tick_type == kind]
            for lo in range(0, len(stream), flush):
                chunk = stream[lo : lo + flush]
                seqs = range(lo + 1, lo + 1 + len(chunk))
                for part in parts.build_parts(contract, kind.value, chunk, seqs, server_id):
                    parts.write_part(root, part, server_id, contract.to_dict())
            rows += [(t.recv_ns, t.data(seq)) for seq, t in enumerate(stream, 1)]
        rows.sort(key=lambda r: r[0])
    frame = ticks_to_frame([data for _, data in sorted_rows(rows)])
    frame.attrs["contracts"] = [c.to_dict() for c in contracts]
    return frame


def sorted_rows(rows: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """Arrival order: by receive time, a trade ahead of a quote with the same stamp."""
    rank = {"last": 0, "all_last": 1}
    return sorted(rows, key=lambda r: (r[0], rank.get(r[1]["tick_type"], 9), r[1]["contract_id"]))
