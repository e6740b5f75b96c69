"""`submit --wait`'s progress line: stable metrics, and a bar once the job declares its total."""

from __future__ import annotations

import io

from rich.console import Console

from reprotrain.cli.remote import Progress


def entry(step: int, loss: float) -> dict:
    return {"step": step, "metrics": {"loss": loss}}


def test_metrics_stay_between_updates_and_the_bar_follows_the_declared_total() -> None:
    p = Progress("a" * 32, console=Console(file=io.StringIO(), force_terminal=True, width=150))
    task = p.bar.tasks[0]
    p([], {"status": "QUEUED", "count": 0})
    assert task.total is None and "queued" in task.description
    p([entry(0, 1.5), entry(4, 0.25)], {"status": "RUNNING", "count": 5, "total": 10})
    assert task.total == 10 and task.completed == 5 and task.percentage == 50
    p([], {"status": "RUNNING", "count": 5, "total": 10})  # nothing new: the last metrics stay shown
    assert "step 4" in task.description and "loss=0.25" in task.description
    p([entry(9, 0.125)], {"status": "SUCCEEDED", "count": 10, "total": 10})
    assert task.completed == 10 and task.finished and not p.bar.live.is_started
