"""Fuzzing both WebSocket endpoints of a real server with mutated client messages: every
message gets its answer (echoing the request id when it had a usable one), no connection
ends, nothing is logged at ERROR, and every reply matches /v2/schema (the suite's check)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any

import orjson
import websockets
from pydantic_core import from_json

from tests.conftest import AAPL, WAIT

SEED = 20261207
REPLIES = {"pong", "subscribed", "unsubscribed", "error", "stats"}
RAW = "\x00raw:"  # a string standing for a JSON literal no encoder writes (1e400)

STREAM_SEEDS: list[dict[str, Any]] = [
    {"type": "ping", "id": "msg-003", "timestamp": "2025-01-15T10:30:00.123Z"},
    {"type": "ping", "id": 7, "data": {"timestamp": 123}, "metadata": {"k": "v"}},
    {
        "type": "subscribe",
        "id": "s",
        "data": {
            "contract_id": AAPL,
            "tick_types": ["bid_ask", "last"],
            "config": {
                "limit": 5,
                "timeout_seconds": 1.5,
                "resume_from": {"bid_ask": 0, "last": 3},
                "batch_ms": 50,
            },
        },
    },
    {"type": "subscribe", "id": 9, "data": {"contract_id": "ES", "tick_types": ["last"]}},
    {"type": "unsubscribe", "id": "u", "data": {"stream_id": "265598_last_1_ab"}},
    {"type": "unsubscribe_all", "id": "a"},
]
CONTROL_SEEDS: list[dict[str, Any]] = [
    {"type": "stats", "id": "s", "timestamp": "2025-01-15T10:30:00.123Z"},
    {"type": "ping", "id": 1, "data": {"timestamp": "t"}},
]
NAMES = [
    "id",
    "type",
    "data",
    "timestamp",
    "metadata",
    "config",
    "limit",
    "resume_from",
    "contract_id",
    "tick_types",
    "stream_id",
    "batch_ms",
    "timeout_seconds",
    "x" * 300,
]


def hostile(rng: random.Random, depth: int = 0) -> Any:
    """A value a careless encoder or validator could choke on."""
    kind = rng.randrange(14 if depth < 3 else 10)
    if kind == 0:
        return rng.choice([2**64, -(2**64), 2**63, 2**63 - 1, -(2**63) - 1, 10**30, 2**31])
    if kind == 1:
        return int("9" * rng.randint(20, 4200))
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31 - 1, True, False, None])
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e308, 5e-324, 1.0, 1e19])
    if kind == 4:
        return RAW + rng.choice(["1e400", "-1e400", "1E999", "-0"])
    if kind == 5:
        return "x" * rng.choice([0, 1, 64, 65, 129, 300, 5_000, 40_000])
    if kind == 6:
        return rng.choice(["", " ", "last", "BidAsk", "AAPL", "2147483648", " 0 ", "{tick_type}"])
    if kind == 7 and rng.random() < 0.5:  # contract specs: sec type, exchange, expiry forms
        return rng.choice(
            [
                "ES:FUT:CME:202703",
                "ES:FUT:CME:99999999",
                "AAPL:STK",
                "::::",
                "EUR.USD",
                "ES:OPT",
                "CL:FUT:NYMEX:0",
                "es:fut",
                "X:Y:Z:W:V",
            ]
        )
    if kind == 7:
        return rng.choice(["é\u2028\u0000", "🦄" * 50, "'\"\\", "\ufeff", "2025-01-15T10:30Z"])
    if kind == 8:
        return rng.choice(["ping", "subscribe", "stats", "unsubscribe", "pong", "PING"])
    if kind == 9:
        return rng.choice([[], {}, [[[[[]]]]], {"a": {"b": {"c": {}}}}])
    if kind == 10:
        return [hostile(rng, depth + 1) for _ in range(rng.randint(1, 4))]
    if kind == 11:
        return {rng.choice(NAMES): hostile(rng, depth + 1) for _ in range(rng.randint(1, 3))}
    if kind == 12:
        nested: Any = hostile(rng, 3)
        for _ in range(rng.randint(50, 300)):  # deeper than any parser's recursion limit
            nested = [nested]
        return nested
    return json.loads(json.dumps(rng.choice(STREAM_SEEDS)))


def dicts(node: Any) -> list[dict]:
    found = [node] if isinstance(node, dict) else []
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        found += dicts(child)
    return found


def mutate(rng: random.Random, seeds: list[dict]) -> str | bytes:
    """One mutated message, as sent: JSON text, cut JSON text or random bytes."""
    msg: Any = json.loads(json.dumps(rng.choice(seeds)))
    for _ in range(rng.choice([0, 0, 1, 1, 1, 2, 3])):  # unchanged seeds reach the streams
        targets = dicts(msg)
        op = rng.randrange(5)
        if op == 4 or not targets:
            msg = hostile(rng)
            continue
        target = rng.choice(targets)
        if op == 0 and target:
            target[rng.choice(list(target))] = hostile(rng)
        elif op == 1 and target:
            del target[rng.choice(list(target))]
        else:
            target[rng.choice(NAMES)] = hostile(rng)
    text = json.dumps(msg, ensure_ascii=rng.random() < 0.5)
    for literal in ("1e400", "-1e400", "1E999", "-0"):
        text = text.replace(json.dumps(RAW + literal), literal)
    if len(text) > 60_000:
        text = text[:60_000]
    cut = rng.random()
    if cut < 0.05:
        return text[: rng.randrange(len(text) + 1)]
    if cut < 0.08:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
    return text


def usable_id(raw: str | bytes) -> object:
    """The id a reply must echo: the message's, if it is JSON the server's parser reads
    (nested at most 200 deep) and the id is valid."""
    try:
        msg = from_json(raw)
    except ValueError:
        return None
    rid = msg.get("id") if isinstance(msg, dict) else None
    if isinstance(rid, bool) or not isinstance(rid, int | str):
        return None
    if isinstance(rid, int):
        return rid if -(2**63) <= rid < 2**63 else None
    return rid if len(rid) <= 128 else None


async def answer(conn: websockets.ClientConnection) -> dict:
    async with asyncio.timeout(WAIT):
        while True:
            msg = orjson.loads(await conn.recv())
            if msg["type"] in REPLIES and not (msg["type"] == "error" and "stream_id" in msg):
                return msg


async def fuzz(url: str, seeds: list[dict], count: int, rng: random.Random) -> dict[str, int]:
    kinds: dict[str, int] = {}
    async with websockets.connect(url, open_timeout=WAIT, max_size=2**24) as conn:
        for i in range(count):
            raw = mutate(rng, seeds)
            await conn.send(raw)
            try:
                got = await answer(conn)
            except (websockets.ConnectionClosed, TimeoutError) as exc:
                raise AssertionError(f"message {i} got no answer: {raw[:300]!r}") from exc
            rid = usable_id(raw)
            assert rid is None or got.get("id") == rid, (raw[:300], got)
            kinds[got["type"]] = kinds.get(got["type"], 0) + 1
            if got["type"] == "subscribed":  # keep the connection quiet for the next one
                await conn.send('{"type":"unsubscribe_all","id":"quiet"}')
                assert (await answer(conn))["id"] == "quiet"
    return kinds


def failure(record: logging.LogRecord) -> bool:
    """A traceback, or an error of the server (ib_insync logs IB's refusals of unknown
    symbols at ERROR: those are answers, not failures)."""
    ours = record.name.split(".")[0] in ("ibstream", "uvicorn", "websockets", "asyncio")
    return record.exc_info is not None or (ours and record.levelno >= logging.ERROR)


async def test_mutated_messages_always_get_an_answer(server, caplog):
    rng = random.Random(SEED)
    control = server.url.replace("http", "ws") + "/ws/control"
    stream_kinds = await fuzz(server.ws_url, STREAM_SEEDS, 3_000, rng)
    control_kinds = await fuzz(control, CONTROL_SEEDS, 1_000, rng)
    assert not [r for r in caplog.records if failure(r)]
    # the mutations reach past validation too, not only into errors
    assert {"error", "pong", "subscribed"} <= set(stream_kinds), stream_kinds
    assert {"error", "pong", "stats"} <= set(control_kinds), control_kinds
