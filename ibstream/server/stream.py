"""One client stream: a (contract, tick type) of one subscriber, with its own limit,
timeout, counters and, when it asked for `batch_ms`, batched delivery (in its subscriber's
shared frame, see `batching`)."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING

from ibstream.errors import StreamError
from ibstream.model import ContractInfo, TickType
from ibstream.protocol.encode import (
    EncodedTick,
    Outgoing,
    error_message,
    item_prefix,
    message,
    tick_prefix,
)

if TYPE_CHECKING:
    from ibstream.server.subscriber import Subscriber


def new_stream_id(contract_id: int, tick_type: TickType) -> str:
    return f"{contract_id}_{tick_type.value}_{int(time.time() * 1000)}_{secrets.token_hex(4)}"


class StreamHandle:
    """One client stream; ticks go one message each, or batched every `batch_ms`."""

    def __init__(
        self,
        owner: Subscriber,
        contract: ContractInfo,
        tick_type: TickType,
        *,
        limit: int | None,
        timeout: float | None,
        batch_ms: float | None = None,
        start_ns: int | None = None,
    ):
        self.owner = owner
        self.contract = contract
        self.tick_type = tick_type
        self.stream_id = new_stream_id(contract.contract_id, tick_type)
        self.prefix = tick_prefix(self.stream_id)
        self.batch_ms = batch_ms or None  # 0 means one message per tick, as absent does
        self.batch_seconds = (batch_ms or 0) / 1000
        self.item_prefix = item_prefix(self.stream_id)
        self.limit = limit
        self.timeout = timeout
        self.start_ns = start_ns  # a replay's start (config `start`); live hubs refuse it
        self.count = 0
        self.last_sequence = 0
        # Where this stream continues from: the stream's last sequence when the client
        # joined, or its resume position (what the client already has) when it resumed.
        self.start_sequence = 0
        self.started = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self.active = True

    def deliver(self, entry: EncodedTick, *, replayed: bool = False) -> None:
        if not self.active:
            return
        self.count += 1
        self.last_sequence = entry.sequence
        if self.batch_ms is None:
            payload = self.prefix + entry.tail
            self.owner.put(Outgoing("tick", payload, entry.sequence, self.stream_id, replayed))
        else:
            self.owner.batcher.add(self, entry, replayed)
        if self.limit is not None and self.count >= self.limit:
            self.owner.complete(self, "limit_reached")

    def flush(self) -> None:
        """Send the pending frame now (before any other message of this stream)."""
        if self.batch_ms is not None:
            self.owner.batcher.flush()

    def notify(self, status: str, text: str, details: dict | None = None) -> None:
        self.flush()
        data = {"status": status, "message": text, "details": details or None}
        self.owner.put(message("info", data, stream_id=self.stream_id))

    def fail(self, error: StreamError) -> None:
        self.flush()
        self.owner.put(error_message(error, stream_id=self.stream_id))
        self.owner.complete(self, "error")

    def start_timeout(self) -> None:
        if self.timeout is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.timeout, self.owner.complete, self, "timeout")

    def stop_timeout(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def summary(self, reason: str) -> dict:
        return {
            "reason": reason,
            "total_ticks": self.count,
            "duration_seconds": round(time.monotonic() - self.started, 3),
            "final_sequence": self.last_sequence,
        }
