"""A re-run whose comparison breaks still gets stored: its verdict says why instead of the job re-running."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from reprotrain.result import Result
from reprotrain.worker import task


def test_a_broken_comparison_gives_an_incomparable_verdict(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """rerun_verdict raising (a bad stored file, a bug) becomes `incomparable` with the reason."""

    def broken(*_a: object, **_k: object) -> None:
        raise ValueError("cannot read the original's log")

    monkeypatch.setattr(task, "rerun_verdict", broken)
    result = Result(job_id="b", name="n", spec={}, spec_digest="d", status="SUCCEEDED")
    rt = SimpleNamespace(store=None, artifacts=None)  # the stub raises before using them
    v = task.verdict_of_rerun(rt, "a", result, tmp_path)  # type: ignore[arg-type]
    assert v.verdict == "incomparable"
    assert v.reason == "the verdict could not be computed: ValueError: cannot read the original's log"
