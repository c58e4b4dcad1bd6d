"""Baseline: a bare `websockets` server pushing one tick-shaped JSON message as fast as it can.

Run: python -m bench.bare_server PORT CLIENTS

Pushing starts once CLIENTS are connected, and each pusher yields to the others every few
messages, so all clients are served fairly (as the ibstream server's writers are).
"""

import asyncio
import sys

import websockets

MESSAGE = (
    '{"type":"tick","stream_id":"637533641_bid_ask_1764115200000_0a1b2c3d",'
    '"timestamp":"2026-11-26T00:00:00.000Z","data":{"contract_id":637533641,'
    '"tick_type":"bid_ask","sequence":123456,"recv_ns":1764115200000000000,'
    '"bid_price":5900.0,"bid_size":12.0,"ask_price":5900.25,"ask_size":9.0}}'
)


async def main(port: int, clients: int) -> None:
    connected: list[object] = []
    everyone = asyncio.Event()

    async def push(ws) -> None:
        connected.append(ws)
        if len(connected) >= clients:
            everyone.set()
        await everyone.wait()
        try:
            while True:
                for _ in range(16):
                    await ws.send(MESSAGE)
                await asyncio.sleep(0)
        except websockets.ConnectionClosed:
            pass

    async with websockets.serve(push, "127.0.0.1", port, max_size=2**20):
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
