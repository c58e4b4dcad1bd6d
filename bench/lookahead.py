"""Accuracy of the opt-in `lookahead` classification beside every method of `METHODS`:
overall, for trades inside the spread and for trades at the quote, on the recorded data with
the true aggressor and on the gateway simulator.

    python -m bench.lookahead [--events 200000] [--seed 1]

Recorded data (`ibstream.datasets`, $IBSTREAM_DATA or the bundled samples, receive-time
order): every method scored on the trades inside the quote window (after the first quote,
by the last one), neutral counted as wrong. A trade is `inside` when its prevailing quote is
ok (bid < ask) and bid < price < ask, `at quote` when its price is the bid or the ask; the
rest (outside the spread, locked, crossed quotes) count only in `all`. The simulator (ES, its
hidden-liquidity prints are the trades inside the spread) is synthetic: its quotes after a
print do not depend on the print, so it shows what lookahead costs where the next quote
carries no information. For the trades at the quote it then counts what the next quote of
the contract shows: the side the trade printed at taken (its size smaller at the same price,
moved away or gone) and the other not (`confirmed`), the other side taken and its own not
(`contradicted`: what a rule that turned such trades would turn), both or neither; and how
many of each Lee-Ready gets right. Deterministic: any machine prints the same.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from ibstream.analytics import METHODS, classify
from ibstream.datasets import load_recorded, recorded_names
from ibstream.gateway.contracts import BUILTIN_BY_CON_ID
from ibstream.gateway.market import BUY, Market, Quote, Trade

ES = 637533641
ALL_METHODS = (*METHODS, "lookahead")


def simulated(events: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The simulator's ES market as a tick frame, and the true side of each trade."""
    steps = Market(BUILTIN_BY_CON_ID[ES], seed=seed).step(events, 1_800_000_000.0)
    steps = [e for e in steps if isinstance(e, Quote | Trade)]
    quote = np.array([isinstance(e, Quote) for e in steps])
    nan = np.nan
    frame = pd.DataFrame(
        {
            "contract_id": np.full(len(steps), ES),
            "tick_type": np.where(quote, "bid_ask", "last"),
            "price": [nan if q else e.price for e, q in zip(steps, quote, strict=True)],
            "size": [nan if q else float(e.size) for e, q in zip(steps, quote, strict=True)],
            "bid_price": [e.bid if q else nan for e, q in zip(steps, quote, strict=True)],
            "ask_price": [e.ask if q else nan for e, q in zip(steps, quote, strict=True)],
            "bid_size": [e.bid_size if q else nan for e, q in zip(steps, quote, strict=True)],
            "ask_size": [e.ask_size if q else nan for e, q in zip(steps, quote, strict=True)],
        },
        index=pd.DatetimeIndex(
            pd.to_datetime(1_800_000_000_000_000_000 + np.arange(len(steps)) * 1000, utc=True),
            name="time",
        ),
    )
    truth = np.array(["buy" if e.side == BUY else "sell" for e in steps if isinstance(e, Trade)])
    return frame, truth


def where_traded(trades: pd.DataFrame) -> dict[str, np.ndarray]:
    """Masks of the trades: all, inside the spread, at the quote."""
    price, bid, ask = (trades[c].to_numpy() for c in ("price", "bid", "ask"))
    ok = (trades["quote"] == "ok").to_numpy()
    return {
        "all": np.ones(len(trades), dtype=bool),
        "inside": ok & (price > bid) & (price < ask),
        "at quote": ok & ((price == bid) | (price == ask)),
    }


def next_quotes(ticks: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per trade row (`last` / `all_last`, frame order): the row of the last quote of its
    contract before it and of the first after it, -1 where none."""
    kind = ticks["tick_type"].astype(str).to_numpy()
    contract = ticks["contract_id"].to_numpy()
    is_quote, is_trade = kind == "bid_ask", np.isin(kind, ("last", "all_last"))
    rows = np.arange(len(ticks))
    before = np.full(int(is_trade.sum()), -1)
    after = np.full(len(before), -1)
    trade_rank = np.cumsum(is_trade) - 1
    for c in np.unique(contract):
        quotes, trades = rows[is_quote & (contract == c)], rows[is_trade & (contract == c)]
        at = np.searchsorted(quotes, trades)
        mine = trade_rank[trades]
        before[mine] = np.where(at > 0, quotes[np.maximum(at - 1, 0)], -1) if len(quotes) else -1
        after[mine] = np.where(at < len(quotes), quotes[np.minimum(at, len(quotes) - 1)], -1)
    return before, after


def at_quote_evidence(ticks: pd.DataFrame, base: pd.DataFrame, right: np.ndarray, at: np.ndarray):
    """What the next quote shows for trades at the quote (see the module doc)."""
    before, after = next_quotes(ticks)
    at = at & (before >= 0) & (after >= 0)
    nan = np.full(len(ticks), np.nan)
    size = {k: ticks[k].to_numpy(float) if k in ticks else nan for k in ("bid_size", "ask_size")}
    price = base["price"].to_numpy()
    taken = {}
    for side, away in (("bid", np.less), ("ask", np.greater)):
        old = ticks[f"{side}_price"].to_numpy(float)[before]
        new = ticks[f"{side}_price"].to_numpy(float)[after]
        smaller = size[f"{side}_size"][after] < size[f"{side}_size"][before]
        taken[side] = np.isnan(new) | away(new, old) | ((new == old) & smaller)
    at_bid = price == ticks["bid_price"].to_numpy(float)[before]
    own = np.where(at_bid, taken["bid"], taken["ask"])
    other = np.where(at_bid, taken["ask"], taken["bid"])
    kinds = {
        "confirmed": at & own & ~other,
        "contradicted": at & other & ~own,
        "both or neither": at & (own == other),
    }
    print(
        "at the quote, the next quote: "
        + "; ".join(
            f"{k} {int(m.sum()):,d} (lee_ready right on {int(right[m].sum()):,d})"
            for k, m in kinds.items()
        )
    )


def table(name: str, ticks: pd.DataFrame, truth: np.ndarray, scored: np.ndarray) -> None:
    base = classify(ticks)
    groups = {k: v & scored for k, v in where_traded(base).items()}
    print(f"\n{name}: " + ", ".join(f"{k} {int(v.sum()):,d} trades" for k, v in groups.items()))
    print(f"{'method':10s} " + " ".join(f"{k:>16s}" for k in groups))
    sides = {m: classify(ticks, m)["side"].astype(str).to_numpy() for m in ALL_METHODS}
    for method, side in sides.items():
        right = side == truth
        cells = [
            f"{right[m].sum():>6,d} {100 * right[m].mean():7.2f} %" if m.any() else f"{'-':>16s}"
            for m in groups.values()
        ]
        print(f"{method:10s} " + " ".join(cells))
    at_quote_evidence(ticks, base, sides["lee_ready"] == truth, groups["at quote"])
    changed = (sides["lookahead"] != sides["lee_ready"]) & scored
    print(
        f"lookahead changed {int(changed.sum()):,d} of lee_ready's sides, "
        f"{int((sides['lookahead'] == truth)[changed].sum()):,d} of them to the true side"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="simulator events")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print("right trades and accuracy (neutral counts as wrong), per kind of trade")
    for name in recorded_names():
        data = load_recorded(name)
        table(name, data.ticks, data.truth.to_numpy(), data.quoted.to_numpy())
    frame, truth = simulated(args.events, args.seed)
    table(f"simulator ES, {args.events:,d} events, seed {args.seed}", frame, truth, truth != "")


if __name__ == "__main__":
    main()
