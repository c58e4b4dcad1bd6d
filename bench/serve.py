"""Benchmark server process: the ibstream server (`start_server`) on a free port.

    python -m bench.serve IB_PORT CLIENT_ID MAX_CONNECTIONS [SEND_TIMEOUT [RECORD [BUS]]]

Connects to the gateway simulator at 127.0.0.1:IB_PORT, prints `{"port": P}` once IB is
connected (or `{"failed": ...}`), and stops gracefully when stdin closes. Its own process,
so its CPU is its own and the bench's simulator and clients do not share its event loop.
On stop it writes its garbage collections per generation and the longest pause of each to
stderr, which the bench prints. (gc.freeze() after start-up with a 10x young threshold was
tried: it cut step 3's full collections from about 40 to 1-3, but no full collection runs
in step 4, so its p99 did not fall, and young collections got longer; the server keeps
Python's defaults.)
"""

import asyncio
import gc
import sys
import time

import orjson

from ibstream.server.run import start_server
from ibstream.server.settings import ServerSettings


class GcPauses:
    """Collections per generation and the longest pause of each, from `gc.callbacks`."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.longest = [0.0, 0.0, 0.0]
        self._started = 0.0
        gc.callbacks.append(self.on_gc)

    def on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        self.count[generation] += 1
        pause = (time.perf_counter() - self._started) * 1000
        self.longest[generation] = max(self.longest[generation], pause)

    def summary(self) -> str:
        return "gc " + ", ".join(
            f"gen{g}: {n} collections, longest {ms:.1f} ms"
            for g, (n, ms) in enumerate(zip(self.count, self.longest, strict=True))
        )


async def main(
    ib_port: int,
    client_id: int,
    connections: int,
    send_timeout: int = 10,
    record: str = "",
    bus: str = "",
) -> None:
    settings = ServerSettings(
        record=record or None,
        bus=bus or None,
        port=0,
        ib_port=ib_port,
        client_id=client_id,
        max_connections_per_ip=connections,
        send_timeout=send_timeout,
        log_level="error",
    )
    handle = await start_server(settings)
    pauses = GcPauses()
    try:
        if not handle.source.connected:
            print(orjson.dumps({"failed": "IB not connected"}).decode(), flush=True)
            return
        print(orjson.dumps({"port": handle.port}).decode(), flush=True)
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, sys.stdin.readline):
            pass
    finally:
        await handle.stop()
        print(pauses.summary(), file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(main(*map(int, sys.argv[1:5]), *sys.argv[5:7]))
