"""What a resume queues after `subscribed`: the gap infos, then the buffered ticks of all
its streams merged in the order they arrived (as they came live), bounded: when they would
not fit in the room left for replayed ticks, the newest that fit are replayed and each stream
cut short gets a `replay_limit` gap for its oldest ones."""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, NamedTuple

from ibstream.model import TickType
from ibstream.protocol.encode import EncodedTick

if TYPE_CHECKING:
    from ibstream.server.hub import Hub
    from ibstream.server.stream import StreamHandle


class Replay(NamedTuple):
    gaps: list[tuple[StreamHandle, dict]]
    entries: list[tuple[int, int, EncodedTick, StreamHandle]]  # (recv_ns, n, entry, handle)


def plan_replay(
    hub: Hub,
    handles: list[StreamHandle],
    positions: dict[TickType, int] | None,
    room: int,
    replay_size: int,
) -> Replay:
    """Move each resumed stream's start to its resume position (when the hub knows it) and
    collect what to queue: at most `room` ticks (`replay_size` names the bound in gaps)."""
    gaps: list[tuple[StreamHandle, dict]] = []
    runs = []
    for n, handle in enumerate(handles):
        if not positions or handle.tick_type not in positions or not handle.active:
            continue
        position = positions[handle.tick_type]
        key = (handle.contract.contract_id, handle.tick_type)
        entries, found = hub.replay(key, position)  # type: ignore[arg-type]
        if not any(gap["reason"] == "unknown_sequence" for gap in found):
            handle.start_sequence = handle.last_sequence = position
        gaps += [(handle, gap) for gap in found]
        runs.append([(e.recv_ns, n, e, handle) for e in entries])
    merged = list(heapq.merge(*runs, key=lambda run: run[:2]))
    if len(merged) > room:
        cut: dict[StreamHandle, list[int]] = {}
        for _, _, entry, handle in merged[: len(merged) - room]:
            cut.setdefault(handle, []).append(entry.sequence)
        merged = merged[len(merged) - room :]
        gaps += [(h, replay_cut(h, seqs, replay_size)) for h, seqs in cut.items()]
    return Replay(gaps, merged)


def replay_cut(handle: StreamHandle, cut: list[int], replay_size: int) -> dict:
    """The gap of the oldest replayed ticks left out to keep within `replay_size`."""
    return {
        "reason": "replay_limit",
        "first_missing": cut[0],
        "last_missing": cut[-1],
        "message": f"ticks {cut[0]}-{cut[-1]} of {handle.tick_type.value} were not replayed: "
        f"a connection holds at most {replay_size} replayed ticks at a time (resume fewer "
        "streams at once, or read a replay before resuming more)",
    }
