"""A real recording for the replay tests, and a replay server outside the test's loop.

The recording is made of ticks a real server streamed from the gateway simulator (their
receive stamps and sequences as clients got them), written with the store's own part
writer in several parts per stream, as a recorder flushing every few hundred ticks does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pandas as pd
import websockets

from ibstream.client.frames import ticks_to_frame
from ibstream.gateway import GatewaySimulator
from ibstream.model import ContractInfo, Tick, TickType
from ibstream.server.run import ServerHandle, start_replay_server, start_server
from ibstream.server.settings import ServerSettings
from ibstream.store import layout, parts
from ibstream.store.replay import Recording, ReplayHub
from tests.schema_check import SENT

WAIT = 20.0
PART_TICKS = 300  # ticks per part file: several parts per stream
SERVER_ID = "rec0000000000001"


@dataclass
class Recorded:
    """What was recorded: the wire `data` rows per stream and the contracts."""

    path: Path
    rows: dict[tuple[int, str], list[dict]]
    contracts: dict[int, dict]

    def of(self, contract_id: int, tick_types: tuple[str, ...] = ("bid_ask", "last")) -> list[dict]:
        """One contract's rows in recorded arrival order."""
        out = [r for t in tick_types for r in self.rows.get((contract_id, t), [])]
        return sorted(out, key=lambda r: r["recv_ns"])

    def frame(self, contract_id: int) -> pd.DataFrame:
        return ticks_to_frame(self.of(contract_id))

    def id_of(self, symbol: str) -> int:
        return next(c for c, info in self.contracts.items() if info["symbol"] == symbol)


async def _stream(ticks: int) -> tuple[dict, dict]:
    gateway = GatewaySimulator(port=0, seed=5, rate=1000.0, bursts=False)
    await gateway.start()
    settings = ServerSettings(port=0, ib_port=gateway.port, client_id=random.randint(1000, 10**6))
    server = await start_server(settings)
    rows: dict[tuple[int, str], list[dict]] = {}
    contracts: dict[int, dict] = {}
    try:
        async with websockets.connect(server.ws_url) as ws:
            await ws.recv()
            for n, spec in enumerate(("ES", "AAPL")):
                data = {"contract_id": spec, "tick_types": ["bid_ask", "last"]}
                await ws.send(orjson.dumps({"type": "subscribe", "id": n, "data": data}))
            seen = 0
            while seen < ticks:
                msg = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
                if msg["type"] == "subscribed":
                    contract = msg["data"]["contract"]
                    contracts[contract["contract_id"]] = contract
                elif msg["type"] == "tick":
                    data = msg["data"]
                    rows.setdefault((data["contract_id"], data["tick_type"]), []).append(data)
                    seen += 1
    finally:
        await server.stop()
        await gateway.stop()
    return rows, contracts


def write_recording(path: Path | str, rows: dict, contracts: dict) -> None:
    """The rows as part files, PART_TICKS ticks a part."""
    root = layout.open_root(path)
    for (contract_id, tick_type), stream in rows.items():
        info = ContractInfo(**contracts[contract_id])
        for lo in range(0, len(stream), PART_TICKS):
            chunk = stream[lo : lo + PART_TICKS]
            ticks = [
                Tick(
                    **{
                        **{k: v for k, v in r.items() if k != "sequence"},
                        "tick_type": TickType(r["tick_type"]),
                    }
                )
                for r in chunk
            ]
            sequences = [r["sequence"] for r in chunk]
            for part in parts.build_parts(info, tick_type, ticks, sequences, SERVER_ID):
                parts.write_part(root, part, SERVER_ID, contracts[contract_id])


def make_recording(path: Path, ticks: int = 3_000) -> Recorded:
    rows, contracts = asyncio.run(_stream(ticks))
    write_recording(path, rows, contracts)
    return Recorded(path, rows, contracts)


async def replay_server(path: Path | str, **options: object) -> ServerHandle:
    """A replay server on this loop (its messages checked against /v2/schema)."""
    hub_options = {
        k: options.pop(k) for k in ("speed", "start_ns", "end_ns", "loop") if k in options
    }
    hub = ReplayHub(Recording.open(path), **hub_options)  # type: ignore[arg-type]
    settings = ServerSettings(port=0, max_connections_per_ip=100, sent_observer=SENT, **options)  # type: ignore[arg-type]
    return await start_replay_server(settings, hub)


@contextlib.contextmanager
def threaded_replay(path: Path, **options: object) -> Iterator[ServerHandle]:
    """A replay server on its own loop thread, for the blocking `Client`."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-replay-loop", daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(replay_server(path, **options), loop).result(WAIT)
    try:
        yield server
    finally:
        try:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(WAIT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(WAIT)
            loop.close()
