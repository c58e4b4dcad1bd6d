"""The JSON lines of `ibstream demo --json` and `ibstream delta --json`: one object per line,
each with a `type`, so a reader can tell trades, updates and the final summary apart.

    {"type": "trade", "timestamp": "...Z", "side": "buy", "size": 1.0, "price": 5900.25,
     "bid": 5900.0, "ask": 5900.25, "delta": 3.0}   (bid / ask null before a quote; delta:
                                                      the cumulative delta after the trade)
    {"type": "summary", "total_trades": 80, "buy_volume": 95.0, "sell_volume": 88.0,
     "net_delta": 7.0, "buy_pct": 51.91}            (`DeltaSummary.to_dict`; the last line)
"""

from __future__ import annotations

import orjson

from ibstream.model import iso_timestamp


def json_line(kind: str, **fields: object) -> str:
    """One line (without its newline): `{"type": kind, **fields}`; NaN is written null."""
    return orjson.dumps({"type": kind, **fields}).decode()


def trade_fields(
    recv_ns: int, side: str, size: float, price: float, bid: float, ask: float, delta: float
) -> dict:
    """The fields of a `trade` line (`recv_ns`: the receive time, ns UTC)."""
    return {
        "timestamp": iso_timestamp(recv_ns),
        "side": side,
        "size": size,
        "price": price,
        "bid": bid,  # NaN (no quote yet) is written as null
        "ask": ask,
        "delta": delta,
    }
