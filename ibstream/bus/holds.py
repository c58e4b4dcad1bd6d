"""Streams held upstream for other processes (edges) through `ibstream.control.hold`.

A hold is a hub member that delivers nowhere (the ticks reach the holder through the bus),
like the recorder's kept streams: while one exists the source keeps its one IB subscription
of that stream. Each hold has a lease: a holder renews it by holding again; one that stops
(an edge that was kill -9ed) loses it when the lease passes, and the stream is then released
like any client's (the hub's grace period applies).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from ibstream.errors import StreamError
from ibstream.model import ContractInfo, TickType
from ibstream.server.hub import Hub, QuietMember

log = logging.getLogger(__name__)
HoldKey = tuple[str, int, TickType]  # holder, contract id, tick type


@dataclass(eq=False)
class Hold(QuietMember):
    """One holder's hold on one stream; `expiry` ends it unless renewed."""

    holder: str = ""
    holds: Holds | None = None
    expiry: asyncio.TimerHandle | None = None

    def fail(self, error: StreamError) -> None:
        """IB ended the stream: the hold is over (the holder reads the `stream_error`)."""
        super().fail(error)
        if self.holds is not None:
            self.holds.forget(self, f"IB ended the stream: {error.message}")


@dataclass(eq=False)
class Holds:
    hub: Hub
    held: dict[HoldKey, Hold] = field(default_factory=dict)

    def hold(self, holder: str, contract: ContractInfo, tick_type: TickType, lease: float) -> int:
        """Hold (or renew) for `lease` s; the stream's last sequence now."""
        key = (holder, contract.contract_id, tick_type)
        held = self.held.get(key)
        if held is None:
            held = Hold(contract, tick_type, holder=holder, holds=self)
            self.hub.attach(held)  # type: ignore[arg-type]
            self.held[key] = held
            log.info("bus: %s holds %s %s", holder, contract.contract_id, tick_type.value)
        if held.expiry is not None:
            held.expiry.cancel()
        loop = asyncio.get_running_loop()
        held.expiry = loop.call_later(lease, self._expire, held, lease)
        return self.hub.last_sequence(contract.contract_id, tick_type)

    def release(self, holder: str, contract_id: int, tick_type: TickType) -> bool:
        held = self.held.get((holder, contract_id, tick_type))
        if held is None:
            return False
        self.forget(held, "released")
        return True

    def _expire(self, held: Hold, lease: float) -> None:
        self.forget(held, f"lease of {lease:g} s passed without a renewal")

    def forget(self, held: Hold, why: str) -> None:
        key = (held.holder, held.contract.contract_id, held.tick_type)
        if self.held.get(key) is not held:
            return
        del self.held[key]
        held.active = False
        if held.expiry is not None:
            held.expiry.cancel()
        self.hub.detach(held)  # type: ignore[arg-type]
        log.info("bus: %s no longer holds %s %s: %s", held.holder, key[1], key[2].value, why)

    def status(self) -> list[dict]:
        return [
            {"holder": holder, "contract_id": cid, "tick_type": tt.value}
            for holder, cid, tt in self.held
        ]

    def close(self) -> None:
        for held in list(self.held.values()):
            self.forget(held, "source stopping")
