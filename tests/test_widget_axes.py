"""Value axes the dashboard sets from Python: finite, never zero wide, round ticks."""

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from ibstream.model import price_decimals as decimals
from ibstream.widgets.axes import extent, ticks


def test_decimals_follow_the_tick_size():
    assert [decimals(t) for t in (0.25, 0.01, 0.00005, 1, "x", -1, math.nan)] == [
        2, 2, 5, 0, 2, 2, 2,
    ]  # fmt: skip


def test_extent_of_nothing_or_one_value_is_still_wide():
    assert extent(np.array([]), least=2.0) == (-1.0, 1.0)
    assert extent(np.array([np.nan, 5.0]), least=1.0) == (4.5, 5.5)
    assert extent(np.array([3.0, 7.0]), least=1.0, include=(0.0,)) == (0.0, 7.0)


finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(finite, st.floats(1e-4, 1e6), st.sampled_from([0.0, 0.01, 0.25, 1.0]))
def test_ticks_cover_the_span_with_a_round_step(low, width, quantum):
    values = ticks(low, low + width, quantum)
    assert np.isfinite(values).all() and len(values) >= 2
    assert values[0] <= low + 1e-6 * max(1.0, abs(low)) and values[-1] >= low + width - 1e-6 * max(
        1.0, abs(low + width)
    )
    steps = np.diff(values)
    assert (steps > 0).all() and np.allclose(steps, steps[0])
    if quantum:
        assert abs(steps[0] / quantum - round(steps[0] / quantum)) < 1e-6
