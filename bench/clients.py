"""Benchmark client process: K lean WebSocket clients that count (and optionally time) ticks.

    python -m bench.clients URL K [--contract ID] [--batch-ms MS] [--record] [--save FILE]

Each client is websockets' Sans-I/O `ClientProtocol` on a bare asyncio `Protocol`: about
3 µs per frame, against some 15 µs through the full asyncio client, so on a 2-core machine
the clients take as little CPU as possible from the server they measure. A tick counts once
whether it comes alone (`tick`) or inside a batch (`ticks`: one per `"sequence":`).

With --contract the client subscribes (bid_ask + last, `config.batch_ms` with --batch-ms)
before it counts. --record keeps, for every tick, its tick type, sequence, the server's
`recv_ns` and this process's receive time (`time.time_ns()` when the bytes arrived), plus
the content of each (tick type, sequence) once, so the bench can line the ticks up with what
the simulator sent. --save writes the first client's first 2,000 tick frames (a JSON list of
strings, written at exit) for the bare baseline server to send.

Prints one JSON line `{"ready": K}` (or `{"failed": ..., "code": ...}`), then answers stdin
commands with one JSON line each: `report` -> {"counts": [...], "closed": n};
`records` -> {"records": [...], "content": [...]}. Exits when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from urllib.parse import urlsplit

import orjson
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

TICK = b'{"type":"tick",'
BATCH = b'{"type":"ticks",'
SAVED_FRAMES = 2_000
# the fields that identify a tick among the simulator's events: trades, quotes
CONTENT = (("price", "size"), ("bid_price", "ask_price", "bid_size", "ask_size"))


class Counter(asyncio.Protocol):
    """One WebSocket connection counting the ticks it receives."""

    def __init__(self, url: str, args: argparse.Namespace, shared: Shared) -> None:
        self.ws = ClientProtocol(parse_uri(url), max_size=None)
        self.args, self.shared = args, shared
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.count = 0
        self.closed = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ws.send_request(self.ws.connect())
        self.flush()

    def flush(self) -> None:
        out = self.ws.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                self.on_open(event)
            elif event.opcode is Opcode.TEXT:
                self.on_text(event.data, now)
        self.flush()

    def on_open(self, response: Response) -> None:
        if response.status_code != 101:
            self.fail({"failed": f"handshake answered {response.status_code}"})
        elif self.args.contract is None and not self.ready.done():
            self.ready.set_result(None)

    def on_text(self, data: bytes, now: int) -> None:
        if data.startswith(TICK):
            self.count += 1
            self.shared.seen(self, data, now)
        elif data.startswith(BATCH):
            self.count += data.count(b'"sequence":')
            self.shared.seen(self, data, now)
        elif not self.ready.done():
            self.on_reply(orjson.loads(data))

    def on_reply(self, msg: dict) -> None:
        if msg["type"] == "connected":
            config = {"batch_ms": self.args.batch_ms} if self.args.batch_ms else {}
            data = {"contract_id": self.args.contract, "tick_types": ["bid_ask", "last"]}
            sub = {"type": "subscribe", "id": "1", "data": data | {"config": config}}
            self.ws.send_text(orjson.dumps(sub))
        elif msg["type"] == "subscribed":
            self.ready.set_result(None)
        elif msg["type"] == "error":
            error = msg["data"]
            self.fail({"failed": error.get("message"), "code": error.get("code")})

    def fail(self, report: dict) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(orjson.dumps(report).decode()))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.fail({"failed": f"connection lost: {exc or 'closed by the server'}"})


class Shared:
    """What every client of the process adds to: saved frames and latency records."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.record, self.save = args.record, args.save
        self.saved: list[str] = []
        self.records: list[tuple[str, int, int, int]] = []
        self.content: dict[tuple[str, int], list] = {}
        self.first: Counter | None = None

    def seen(self, client: Counter, data: bytes, now: int) -> None:
        if self.save and len(self.saved) < SAVED_FRAMES and client is self.first:
            self.saved.append(data.decode())
        if not self.record:
            return
        msg = orjson.loads(data)
        for item in msg["data"]["ticks"] if msg["type"] == "ticks" else [msg["data"]]:
            kind, seq = item["tick_type"], item["sequence"]
            self.records.append((kind, seq, item["recv_ns"], now))
            if (kind, seq) not in self.content:
                self.content[kind, seq] = [item.get(f) for f in CONTENT[kind == "bid_ask"]]


async def main(args: argparse.Namespace) -> Shared:
    loop = asyncio.get_running_loop()
    shared = Shared(args)
    parts = urlsplit(args.url)
    clients = []
    for _ in range(args.k):
        _, client = await loop.create_connection(
            lambda: Counter(args.url, args, shared), parts.hostname, parts.port
        )
        clients.append(client)
    shared.first = clients[0]
    try:
        await asyncio.gather(*(c.ready for c in clients))
    except RuntimeError as exc:
        print(exc.args[0], flush=True)
        return shared
    print(orjson.dumps({"ready": args.k}).decode(), flush=True)
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        if line == "report":
            closed = sum(c.closed for c in clients)
            answer = {"counts": [c.count for c in clients], "closed": closed}
        else:
            answer = {"records": shared.records, "content": list(shared.content.items())}
        print(orjson.dumps(answer).decode(), flush=True)
    for client in clients:  # a close frame, then FIN: the server sees a normal close
        if client.transport is not None and not client.transport.is_closing():
            client.ws.send_close()
            client.flush()
            client.transport.close()
    return shared


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("k", type=int)
    parser.add_argument("--contract", type=int)
    parser.add_argument("--batch-ms", type=float)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--save")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    done = asyncio.run(main(arguments))
    if arguments.save:
        with open(arguments.save, "wb") as out:
            out.write(orjson.dumps(done.saved))
