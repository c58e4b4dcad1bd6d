"""A history group's page feed runs ahead of the merge by at most `depth` steps, applies a
step's change only when the merge takes it, hands an error on to the consumer, and closes
its generator."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable

import pytest

from ibstream.server.history_ib import _Ahead


class Feed:
    """Steps that count themselves; `fail_after`: raise after that many."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.made = 0
        self.applied: list[int] = []
        self.closed = False
        self.reached: dict[int, asyncio.Event] = {}
        self.fail_after = fail_after

    def at(self, n: int) -> asyncio.Event:
        return self.reached.setdefault(n, asyncio.Event())

    async def steps(self) -> AsyncIterator[list[Callable[[], None]]]:
        try:
            while True:
                if self.made == self.fail_after:
                    raise RuntimeError("the feed broke")
                self.made += 1
                self.at(self.made).set()
                yield [functools.partial(self.applied.append, self.made)]
        finally:
            self.closed = True


async def test_the_feed_runs_at_most_depth_steps_ahead() -> None:
    feed = Feed()
    ahead = _Ahead(feed.steps(), depth=3)
    await feed.at(4).wait()  # three done and queued, the fourth made and waiting for room
    for _ in range(20):  # loop passes in which an unbounded feed would go on
        await asyncio.sleep(0)
    assert feed.made == 4 and feed.applied == []  # made ahead, not applied
    assert await ahead.step() and feed.applied == [1]
    await feed.at(5).wait()  # one taken: one more made
    for _ in range(20):
        await asyncio.sleep(0)
    assert feed.made == 5
    await ahead.close()
    assert feed.closed and ahead.task.cancelled()


async def test_an_error_in_the_feed_reaches_the_consumer_after_its_steps() -> None:
    feed = Feed(fail_after=2)
    ahead = _Ahead(feed.steps(), depth=4)
    assert await ahead.step() and await ahead.step()
    with pytest.raises(RuntimeError, match="the feed broke"):
        await ahead.step()
    await ahead.close()
    assert feed.closed


async def test_a_finished_feed_says_so() -> None:
    async def two() -> AsyncIterator[list[Callable[[], None]]]:
        yield []
        yield []

    ahead = _Ahead(two(), depth=1)
    assert [await ahead.step() for _ in range(3)] == [True, True, False]
    await ahead.close()
