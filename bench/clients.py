"""Benchmark client process: K WebSocket clients that count tick messages.

Reads commands on stdin: `report` prints one JSON line {"counts": [...], "closed": n}.
Run: python -m bench.clients URL K [CONTRACT]  (CONTRACT given = ibstream: subscribe first)
"""

import asyncio
import sys

import orjson
import websockets

counts: list[int] = []
closed = 0


async def client(i: int, url: str, contract: str | None, ready: asyncio.Event) -> None:
    global closed
    async with websockets.connect(url, max_size=2**22, max_queue=None) as ws:
        if contract:
            await ws.recv()  # connected
            sub = {
                "type": "subscribe",
                "id": "1",
                "data": {"contract_id": contract, "tick_types": ["bid_ask", "last"]},
            }
            await ws.send(orjson.dumps(sub).decode())
            while orjson.loads(await ws.recv())["type"] != "subscribed":
                pass
        ready.set()
        try:
            async for raw in ws:
                if raw.startswith('{"type":"tick"'):
                    counts[i] += 1
        except websockets.ConnectionClosed:
            pass
    closed += 1


async def main(url: str, k: int, contract: str | None) -> None:
    counts.extend([0] * k)
    events = [asyncio.Event() for _ in range(k)]
    tasks = [asyncio.create_task(client(i, url, contract, events[i])) for i in range(k)]
    waiting = asyncio.ensure_future(asyncio.gather(*(e.wait() for e in events)))
    done, _ = await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if waiting not in done:
        print(orjson.dumps({"failed": repr(next(iter(done)).exception())}).decode(), flush=True)
        return
    print(orjson.dumps({"ready": k}).decode(), flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip() == "report":
            print(orjson.dumps({"counts": counts, "closed": closed}).decode(), flush=True)
    for task in tasks:
        task.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
