"""The upstream ceiling's consumer: ib_insync alone, counting tick-by-tick ticks.

    python -m bench.ib_counter IB_PORT CLIENT_ID CON_ID

Connects to the gateway simulator, qualifies the contract and requests BidAsk and Last
tick-by-tick data, as the ibstream server's source does, and counts every tick in
`pendingTickersEvent` (the event the source turns into ticks). Prints `{"ready": 1}`, then
answers each `report` line on stdin with `{"count": n}`; exits when stdin closes.
The library is the server's: ib_insync, or ib_async with IBSTREAM_IB_LIB=ib_async.
"""

import asyncio
import sys

import orjson

from ibstream.ib import api
from ibstream.ib.api import parse_in_slices


async def main(port: int, client_id: int, con_id: int) -> None:
    lib = api.load()
    ib = lib.IB()
    parse_in_slices(ib)  # as the server's source does: the same parser on both sides
    count = 0

    def on_tickers(tickers: set) -> None:
        nonlocal count
        for ticker in tickers:
            count += len(ticker.tickByTicks)

    ib.pendingTickersEvent += on_tickers
    await ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=10)
    try:
        [contract] = await ib.qualifyContractsAsync(lib.Contract(conId=con_id))
        for tick_type in ("BidAsk", "Last"):
            ib.reqTickByTickData(contract, tick_type)
        print(orjson.dumps({"ready": 1}).decode(), flush=True)
        loop = asyncio.get_running_loop()
        while (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            print(orjson.dumps({"count": count}).decode(), flush=True)
    finally:
        ib.disconnect()


if __name__ == "__main__":
    asyncio.run(main(*map(int, sys.argv[1:4])))
