"""Chart series of a trace: exact when the range fits, else per-bucket first/last/min/max plus kept steps."""

from __future__ import annotations

import math
import random

from reprotrain.series import series


def trace(n: int, fn=lambda i: math.sin(i / 50)) -> list[dict]:
    return [{"step": i, "metrics": {"loss": fn(i), "note": "text"}} for i in range(n)]


def test_a_range_that_fits_comes_back_exact_in_step_order() -> None:
    t = trace(100)
    random.Random(1).shuffle(t)
    out = series(t, points=100)
    assert out["exact"] and out["count"] == 100
    assert out["steps"] == list(range(100))
    assert out["metrics"]["loss"] == [math.sin(i / 50) for i in range(100)]
    assert "note" not in out["metrics"]  # not a number: not charted


def test_a_long_trace_keeps_every_spike_and_the_kept_step() -> None:
    """100,000 steps to about 2,000 points: a one-step spike and a one-step dip survive, the range's
    ends are there, and a divergence step asked for is there with its exact value."""
    spikes = {31_337: 50.0, 77_777: -40.0}
    t = trace(100_000, lambda i: spikes.get(i, math.sin(i / 500)))
    out = series(t, points=2000, keep=[54_321])
    assert not out["exact"] and out["count"] == 100_000
    assert 500 < len(out["steps"]) <= 4 * 2000 + 3
    assert out["steps"] == sorted(set(out["steps"]))
    got = dict(zip(out["steps"], out["metrics"]["loss"], strict=True))
    assert got[31_337] == 50.0 and got[77_777] == -40.0
    assert max(out["metrics"]["loss"]) == 50.0 and min(out["metrics"]["loss"]) == -40.0
    assert got[54_321] == math.sin(54_321 / 500)
    assert out["steps"][0] == 0 and out["steps"][-1] == 99_999


def test_a_zoomed_range_is_exact_again() -> None:
    t = trace(100_000)
    out = series(t, points=2000, start=40_000, end=40_999)
    assert out["exact"] and out["steps"] == list(range(40_000, 41_000))


def test_values_that_are_not_finite_numbers_are_gaps() -> None:
    t = [
        {"step": 0, "metrics": {"x": 1.0}},
        {"step": 1, "metrics": {"x": "nan"}},
        {"step": 2, "metrics": {"x": True}},
    ]
    t.append({"step": 3, "metrics": {"x": float("inf")}})
    assert series(t)["metrics"]["x"] == [1.0, None, None, None]
