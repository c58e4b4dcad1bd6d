"""Reconnect delays with jitter, shared by the client (reconnecting to a server) and the
bus (reconnecting to NATS): one definition on the protocol side both may import."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

_JITTER = random.Random()  # our own: jitter never touches the global random state


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: exponential from `initial`, capped at `maximum`, with jitter.

    Each delay is drawn uniformly from [d * (1 - jitter), d]; `max_attempts` None retries
    forever (a research session outlives short server restarts).
    """

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum) or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(
                "Backoff needs 0 < initial <= maximum, factor >= 1 and 0 <= jitter <= 1"
            )

    def delays(self) -> Iterator[float]:
        delay, attempt = self.initial, 0
        while self.max_attempts is None or attempt < self.max_attempts:
            attempt += 1
            yield delay * (1 - self.jitter * _JITTER.random())
            delay = min(self.maximum, delay * self.factor)
