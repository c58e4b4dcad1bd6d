"""Benchmark server process: the ibstream server (`start_server`) on a free port.

    python -m bench.serve IB_PORT CLIENT_ID MAX_CONNECTIONS [SEND_TIMEOUT]

Connects to the gateway simulator at 127.0.0.1:IB_PORT, prints `{"port": P}` once IB is
connected (or `{"failed": ...}`), and stops gracefully when stdin closes. Its own process,
so its CPU is its own and the bench's simulator and clients do not share its event loop.
"""

import asyncio
import sys

import orjson

from ibstream.server.run import start_server
from ibstream.server.settings import ServerSettings


async def main(ib_port: int, client_id: int, connections: int, send_timeout: int = 10) -> None:
    settings = ServerSettings(
        port=0,
        ib_port=ib_port,
        client_id=client_id,
        max_connections_per_ip=connections,
        send_timeout=send_timeout,
        log_level="error",
    )
    handle = await start_server(settings)
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


if __name__ == "__main__":
    asyncio.run(main(*map(int, sys.argv[1:5])))
