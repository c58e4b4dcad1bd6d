"""Baseline: a bare `websockets` server pushing tick frames to every client as fast as it can.

    python -m bench.bare_server CLIENTS [FRAMES]

FRAMES is a JSON list of frame texts (the bench saves frames the ibstream server really
sent, so both servers send the same bytes); without it (or when it holds none) one built-in
tick message is sent.
Binds a free port on 127.0.0.1 and prints `ready PORT`. Pushing starts once CLIENTS are
connected, and each pusher yields to the others every few messages, so all clients are
served fairly (as the ibstream server's writers are). Stops when stdin closes.
"""

import asyncio
import itertools
import sys

import orjson
import websockets

MESSAGE = (
    '{"type":"tick","stream_id":"637533641_bid_ask_1764115200000_0a1b2c3d",'
    '"timestamp":"2026-11-26T00:00:00.000Z","data":{"contract_id":637533641,'
    '"tick_type":"bid_ask","sequence":123456,"recv_ns":1764115200000000000,'
    '"bid_price":5900.0,"bid_size":12.0,"ask_price":5900.25,"ask_size":9.0}}'
)


async def main(clients: int, frames: list[str]) -> None:
    chunks = [frames[i : i + 16] for i in range(0, len(frames), 16)]
    connected: list[object] = []
    everyone = asyncio.Event()

    async def push(ws) -> None:
        connected.append(ws)
        if len(connected) >= clients:
            everyone.set()
        await everyone.wait()
        try:
            for batch in itertools.cycle(chunks):
                for frame in batch:
                    await ws.send(frame)
                await asyncio.sleep(0)
        except websockets.ConnectionClosed:
            pass

    loop = asyncio.get_running_loop()
    async with websockets.serve(push, "127.0.0.1", 0, max_size=2**20) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"ready {port}", flush=True)
        while await loop.run_in_executor(None, sys.stdin.readline):
            pass


def saved_frames(path: str) -> list[str]:
    """The frames saved at `path`; the built-in message when there are none (or no file)."""
    try:
        with open(path, "rb") as saved:
            return orjson.loads(saved.read()) or [MESSAGE]
    except (OSError, orjson.JSONDecodeError):
        return [MESSAGE]


if __name__ == "__main__":
    frames = saved_frames(sys.argv[2]) if len(sys.argv) > 2 else [MESSAGE]
    asyncio.run(main(int(sys.argv[1]), frames))
