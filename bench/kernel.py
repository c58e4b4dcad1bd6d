"""What the kernel did for a piece of code: this process's CPU seconds in the kernel and
the machine's huge-page faults and compaction stalls (`/proc/vmstat`, every process's), so
a figure that swings with how fresh memory is handed out says which way it went."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import NamedTuple

COUNTERS = {"thp_fault_alloc": "huge-page faults", "compact_stall": "compaction stalls"}


class Cost(NamedTuple):
    seconds: float
    sys: float  # this process's CPU seconds in the kernel (page faults, mostly)
    counters: dict[str, int]  # /proc/vmstat deltas, the whole machine's; {} if unreadable


def vmstat() -> dict[str, int]:
    try:
        with open("/proc/vmstat") as lines:
            pairs = (line.split() for line in lines)
            return {k: int(v) for k, v in pairs if k in COUNTERS}
    except OSError:
        return {}


def measured(fn: Callable[[], object]) -> tuple[object, Cost]:
    """`fn()` and what it cost."""
    v0, r0, t0 = vmstat(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out = fn()
    t1, r1, v1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF), vmstat()
    deltas = {k: v1[k] - v0[k] for k in v1 if k in v0}
    return out, Cost(t1 - t0, r1.ru_stime - r0.ru_stime, deltas)


def describe(cost: Cost, ticks: int) -> str:
    """'12.3 M/s, sys 0.10 s, 250 huge-page faults, 0 compaction stalls'."""
    counters = "".join(f", {v} {COUNTERS[k]}" for k, v in cost.counters.items())
    return f"{ticks / cost.seconds / 1e6:.1f} M/s, sys {cost.sys:.2f} s{counters}"
