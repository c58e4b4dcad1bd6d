"""IB's historical tick messages decoded as columns (`history_wire`) equal what the library's
own decoder makes of them, for any page; over TCP, ibstream's requests get tables while a
user's own request on the same connection still gets the library's objects."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime

import ib_async
import ib_insync
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ib_insync import IB

from ibstream.gateway import GatewaySimulator
from ibstream.ib.history import _objects_table, fetch_ticks
from ibstream.ib.history_wire import MESSAGES, column_pages, decode
from ibstream.ib.pacing import Pacer, PacingRules
from tests.history_fixtures import ES, HOST

WHAT_OF = {msg_id: spec[0] for msg_id, spec in MESSAGES.items()}

prices = st.floats(0, 1e6, allow_nan=False).map(lambda p: repr(round(p, 2)))
sizes = st.one_of(st.integers(0, 10**6).map(str), st.floats(0, 1e4).map(repr))
texts = st.text(st.characters(exclude_characters="\0", exclude_categories=("Cs",)), max_size=8)
seconds = st.integers(1_600_000_000, 1_900_000_000).map(str)
masks = st.integers(0, 3).map(str)
TICK = {
    96: st.tuples(seconds, st.just(""), prices, sizes),
    97: st.tuples(seconds, masks, prices, prices, sizes, sizes),
    98: st.tuples(seconds, masks, prices, sizes, texts, texts),
}


class Captured:
    """A wrapper that keeps what the library's decoder hands on."""

    defaultTimezone = UTC  # ib_async's decoder asks its wrapper

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):
        return lambda *args: self.calls.append((name, *args))


def message(msg_id: int, req_id: int, ticks: list[tuple], done: bool) -> list[str]:
    fields = [str(msg_id), str(req_id), str(len(ticks))]
    for tick in ticks:
        fields += tick
    return [*fields, str(int(done))]


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from(sorted(MESSAGES)), st.sampled_from([ib_insync, ib_async]))
def test_a_decoded_page_equals_the_library_decoders_objects(data, msg_id, library) -> None:
    ticks = data.draw(st.lists(TICK[msg_id], max_size=40))
    done = data.draw(st.booleans())
    fields = message(msg_id, 17, ticks, done)
    wrapper = Captured()
    library.decoder.Decoder(wrapper, 0).interpret(list(fields))
    [(method, req_id, objects, their_done)] = wrapper.calls
    mine_id, table, mine_done = decode(fields)
    assert (mine_id, mine_done, method) == (req_id, their_done, MESSAGES[msg_id][1])
    assert table.equals(_objects_table(WHAT_OF[msg_id], objects))


def test_a_truncated_message_is_refused() -> None:
    fields = message(98, 3, [("1700000000", "0", "1.5", "2", "X", "")] * 2, True)
    with pytest.raises(IndexError, match="2 ticks announced, 1 sent"):
        decode(fields[:-7] + ["1"])
    with pytest.raises(ValueError):
        decode(["97", "3", "1", "17x", "0", "1", "2", "3", "4", "1"])


async def test_ibstreams_requests_get_tables_and_a_users_own_get_objects() -> None:
    rules = PacingRules().scaled(0.01)
    async with GatewaySimulator(seed=3, rate=2000, bursts=False, history_pacing=rules) as sim:
        ib = IB()
        await ib.connectAsync(HOST, sim.port, clientId=1, timeout=5)
        try:
            start = int(time.time())
            ib.reqTickByTickData(ES, "AllLast", 0, False)  # the market runs while watched
            await sim.wait_for(lambda: len(set(sim.tape(ES.conId).series["TRADES"].times)) > 2)
            end = max(sim.tape(ES.conId).series["TRADES"].times)  # a second that is over
            ib.cancelTickByTickData(ES, "AllLast")
            table = await fetch_ticks(ib, ES, "TRADES", start, end, pacer=Pacer(rules))
            handler = ib.client.decoder.handlers[98]  # installed by the fetch
            assert isinstance(handler, functools.partial)
            hook = column_pages(ib)
            assert hook is not None and handler.func == hook._handle
            assert hook.requests == set()  # each id forgotten once done
            at = datetime.fromtimestamp(start, UTC)  # 999: not identical to ibstream's page
            theirs = await ib.reqHistoricalTicksAsync(ES, at, "", 999, "TRADES", False)
            assert theirs and all(isinstance(t, ib_insync.HistoricalTickLast) for t in theirs)
            kept = [t for t in theirs if t.time.timestamp() < end]
            assert table.num_rows > 0
            assert _objects_table("TRADES", kept).equals(table.slice(0, len(kept)))
        finally:
            ib.disconnect()
