"""bench/tracking's in-process estimate recovers costs planted in synthetic step times."""

from __future__ import annotations

import numpy as np
import pytest

from bench.tracking import LAGS, schedule, step_costs, step_rows


def _times(seed: int, log_cost: float, after: list[float], steps: int = 3000) -> tuple[list[float], ...]:
    """A loop's work and log times, tracked at the steps `schedule` draws: each tracked step's log
    takes `log_cost` more and the k-th step after it `after[k - 1]` more work; noise, a drifting
    machine, and every 8th step (an epoch's first batch) 30 ms slower, as the CNN's loader makes it."""
    on = np.asarray(schedule(steps, seed), dtype=float)
    rng = np.random.default_rng(seed)
    drift = 1 + 0.3 * np.sin(np.arange(steps) / 150)
    work = 0.010 * drift * rng.lognormal(0, 0.2, steps) + 0.030 * (np.arange(steps) % 8 == 0)
    for k, cost in enumerate(after, start=1):
        work[k:] += cost * on[:-k]
    log = 0.0001 + log_cost * on + rng.normal(0, 0.00001, steps)
    return list(on.astype(bool)), list(work), list(log)


@pytest.mark.parametrize("after", [[0.0, 0.0, 0.0], [0.0001, 0.0, 0.0003]])
def test_step_costs_find_the_log_and_the_steps_after(after: list[float]) -> None:
    """The log's extra time and the sum of what the next LAGS steps' work pays (the last of them
    the most, so a lag counted from the wrong step shows) are recovered to within 0.1 ms of a
    10 ms step, through noise, drift and a periodic slow step."""
    assert len(after) == LAGS
    rows = np.concatenate([step_rows(*_times(seed, 0.0002, after)) for seed in range(6)])
    log, later = step_costs(rows)
    assert log == pytest.approx(0.0002, abs=0.00002)
    assert later == pytest.approx(sum(after), abs=0.0001)
