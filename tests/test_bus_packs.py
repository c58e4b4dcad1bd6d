"""Tick messages on the bus (`wire.py` packs) and an edge's merge of a window's packs
(`window.py`): any interleaving of streams, cut into windows and packs as the source does,
comes back tick for tick in the source's order, bytes unchanged; malformed bodies are
refused with a ValueError, never half read."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ibstream.bus import wire
from ibstream.bus.window import WindowMerge
from ibstream.model import Tick, TickType
from ibstream.protocol.encode import encode_tick

SERVER = "0123456789abcdef"
STREAMS = [(265598, TickType.LAST), (265598, TickType.BID_ASK), (8314, TickType.LAST)]


def messages(choices: list[int], cuts: list[int], split: int) -> tuple[list, list]:
    """The source's side: ticks of the chosen streams in order, cut into windows at `cuts`;
    in a window, each stream's ticks form packs of at most `split`; the window's last pack
    carries END. Returns (subject, body) in publication order and the ticks' order."""
    sequences = dict.fromkeys(range(len(STREAMS)), 0)
    order, out, window = [], [], {}
    bounds = sorted(set(cuts) | {len(choices)})

    def close() -> None:
        packs = [
            (s, recs[i : i + split])
            for s, recs in window.items()
            for i in range(0, len(recs), split)
        ]
        for n, (s, records) in enumerate(packs):
            body = wire.pack_body(SERVER, records, end=n == len(packs) - 1)
            out.append((wire.tick_subject(*STREAMS[s]), body))
        window.clear()

    for ordinal, s in enumerate(choices, 1):
        sequences[s] += 1
        cid, kind = STREAMS[s]
        tick = Tick(cid, kind, ordinal * 1000, price=100.0 + ordinal, size=1.0)
        entry = encode_tick(tick, sequences[s])
        window.setdefault(s, []).append(wire.tick_record(entry, ordinal))
        order.append((cid, kind, sequences[s], entry.tail))
        if ordinal in bounds:
            close()
    return out, order


@settings(max_examples=200, deadline=None)
@given(
    choices=st.lists(st.integers(0, len(STREAMS) - 1), min_size=1, max_size=200),
    cuts=st.lists(st.integers(1, 200), max_size=30),
    split=st.integers(1, 5),
)
def test_packs_merge_back_into_the_source_order(choices, cuts, split) -> None:
    published, order = messages(choices, cuts, split)

    async def edge() -> list:
        got: list = []
        merge = WindowMerge(got.append)
        for subject, body in published:
            merge.pack(wire.parse_pack(subject, body))
        return got

    got = asyncio.run(edge())
    assert [(t.contract_id, t.tick_type, t.entry.sequence, t.entry.tail) for t in got] == order
    assert {t.server_id for t in got} == {SERVER}


async def test_a_window_that_never_ends_is_handed_on_after_its_wait() -> None:
    """The source killed mid-window: what the edge holds goes on after `wait` seconds."""
    published, order = messages([0, 1, 0, 1], [], 1)
    got: list = []
    arrived = asyncio.Event()
    merge = WindowMerge(lambda tick: (got.append(tick), arrived.set()), wait=0.01)
    for subject, body in published[:-1]:  # the END pack never comes
        merge.pack(wire.parse_pack(subject, body))
    assert got == []
    await asyncio.wait_for(arrived.wait(), 5)
    assert [t.entry.sequence for t in got] == [o[2] for o in order[:3]]


def test_a_pack_of_another_source_run_hands_on_the_held_window() -> None:
    first, _ = messages([0, 1], [], 1)
    got: list = []

    async def run() -> None:
        merge = WindowMerge(got.append)
        merge.pack(wire.parse_pack(*first[0]))  # held: not the window's end
        other = wire.pack_body("fedcba9876543210", [wire.tick_record(tick_entry(), 9)], True)
        merge.pack(wire.parse_pack(first[1][0], other))

    asyncio.run(run())
    assert [t.server_id for t in got] == [SERVER, "fedcba9876543210"]


def tick_entry():
    return encode_tick(Tick(265598, TickType.LAST, 1, price=1.0, size=1.0), 1)


@pytest.mark.parametrize(
    "subject, body, why",
    [
        ("ibstream.ticks.1.last", b"\x00" * 5, "too short"),
        ("ibstream.ticks.x.last", b"", "not a tick subject"),
        ("ibstream.ticks.1.nope", b"", "nope"),
        ("ibstream.ticks.1.last", wire.pack_body(SERVER, [], True), "1 to 1000 ticks"),
    ],
)
def test_malformed_packs_are_refused(subject: str, body: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        wire.parse_pack(subject, body)


def test_a_record_cut_short_or_bytes_left_over_are_refused() -> None:
    whole = wire.pack_body(SERVER, [wire.tick_record(tick_entry(), 1)], True)
    subject = wire.tick_subject(265598, TickType.LAST)
    assert len(wire.parse_pack(subject, whole).ticks) == 1
    for bad, why in ((whole[:-3], "tail"), (whole + b"x", "after the last"), (whole[:30], "past")):
        with pytest.raises(ValueError, match=why):
            wire.parse_pack(subject, bad)
    twice = wire.pack_body(SERVER, [wire.tick_record(tick_entry(), 1)] * 2, True)
    with pytest.raises(ValueError, match="does not follow"):
        wire.parse_pack(subject, twice)
