"""IB's pacing rules for historical data, in one place for both sides of the wire.

IB refuses a historical request with error 162 ("pacing violation") when it is identical to
one made in the last 15 s, the seventh for the same contract and tick type within 2 s, or the
61st within 10 minutes. The gateway simulator enforces the rules with `PacingLog.wait`
(anything above 0 is a violation); `ibstream.ib.history.Pacer` sleeps that long instead. Tests
scale the rules down (`PacingRules.scaled`) so they run in seconds.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, replace

PACING_VIOLATION = (
    "Historical Market Data Service error message:Historical data request pacing violation"
)


@dataclass(frozen=True, slots=True)
class PacingRules:
    """The three limits; counts are requests, times seconds."""

    identical_seconds: float = 15.0
    burst_count: int = 6
    burst_seconds: float = 2.0
    window_count: int = 60
    window_seconds: float = 600.0

    def __post_init__(self) -> None:
        for name in ("identical_seconds", "burst_seconds", "window_seconds"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)!r}")
        for name in ("burst_count", "window_count"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be an int >= 1, not {getattr(self, name)!r}")

    def scaled(self, factor: float) -> PacingRules:
        """The same rules with every time multiplied by `factor` (tests: 0.01)."""
        return replace(
            self,
            identical_seconds=self.identical_seconds * factor,
            burst_seconds=self.burst_seconds * factor,
            window_seconds=self.window_seconds * factor,
        )


class PacingLog:
    """The requests made lately (times on one monotonic clock), bounded by the rules."""

    def __init__(self, rules: PacingRules | None = None) -> None:
        self.rules = rules or PacingRules()
        self._all: deque[float] = deque()
        self._by_kind: dict[Hashable, deque[float]] = {}
        self._by_request: dict[Hashable, float] = {}

    def wait(self, request: Hashable, kind: Hashable, now: float) -> float:
        """Seconds until `request` (its whole identity) of `kind` (contract, tick type) keeps
        all three rules; 0 when it may go now."""
        r = self.rules
        self._forget(now)
        waits = [0.0]
        last = self._by_request.get(request)
        if last is not None:
            waits.append(last + r.identical_seconds - now)
        same = self._by_kind.get(kind, ())
        if len(same) >= r.burst_count:
            waits.append(same[-r.burst_count] + r.burst_seconds - now)
        if len(self._all) >= r.window_count:
            waits.append(self._all[-r.window_count] + r.window_seconds - now)
        return max(waits)

    def add(self, request: Hashable, kind: Hashable, now: float) -> None:
        """Count a request made at `now`."""
        self._all.append(now)
        self._by_kind.setdefault(kind, deque()).append(now)
        self._by_request[request] = now

    def _forget(self, now: float) -> None:
        r = self.rules
        while self._all and self._all[0] <= now - r.window_seconds:
            self._all.popleft()
        for kind, times in list(self._by_kind.items()):
            while times and times[0] <= now - r.burst_seconds:
                times.popleft()
            if not times:
                del self._by_kind[kind]
        for request, at in list(self._by_request.items()):
            if at <= now - r.identical_seconds:
                del self._by_request[request]


class Pacer:
    """Keeps one IB connection's historical requests within the rules by waiting for them.

    `slot` returns when a request may go (and counts it); `backoff` is the wait after a 162
    all the same (IB counts differently, or another program shares the account): doubling
    from `backoff_seconds` up to `max_backoff_seconds`, with jitter. `margin` seconds of slack
    on every limit absorb the difference between when a request leaves and when IB counts it.
    Counters: `requests` sent, `violations` (162s) met, `waited` seconds spent pacing.
    """

    def __init__(
        self,
        rules: PacingRules | None = None,
        *,
        margin: float = 0.1,
        retries: int = 6,
        backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 60.0,
    ) -> None:
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, not {margin!r}")
        if not (isinstance(retries, int) and retries >= 0):
            raise ValueError(f"retries must be an int >= 0, not {retries!r}")
        if not 0 < backoff_seconds <= max_backoff_seconds:
            raise ValueError(
                "backoff_seconds must be above 0 and at most max_backoff_seconds, not "
                f"{backoff_seconds!r} / {max_backoff_seconds!r}"
            )
        self.log = PacingLog(rules)
        self.margin = margin
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.requests = 0
        self.violations = 0
        self.waited = 0.0

    async def slot(self, request: Hashable, kind: Hashable) -> None:
        """Wait until `request` of `kind` keeps every rule, then count it as sent."""
        loop = asyncio.get_running_loop()
        while (wait := self.log.wait(request, kind, loop.time() - self.margin)) > 0:
            self.waited += wait
            await asyncio.sleep(wait)
        self.log.add(request, kind, loop.time())
        self.requests += 1

    async def backoff(self, attempt: int) -> None:
        """The pause after the `attempt`-th (0-based) pacing violation in a row."""
        self.violations += 1
        base = min(self.max_backoff_seconds, self.backoff_seconds * 2**attempt)
        wait = base * random.uniform(0.5, 1.0)
        self.waited += wait
        await asyncio.sleep(wait)
