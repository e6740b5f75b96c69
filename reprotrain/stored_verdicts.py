"""Verdicts between stored jobs: the re-run check the service records and serves."""

from __future__ import annotations

from pathlib import Path

from reprotrain.artifacts import ArtifactStore
from reprotrain.compare import compare
from reprotrain.result import Result
from reprotrain.store import Store
from reprotrain.verdict import Verdict, incomparable
from reprotrain.wire import STATE_ARTIFACT


def state_path(store: Store, artifacts: ArtifactStore, job_id: str) -> Path | None:
    for a in store.artifacts(job_id):
        if a.name == STATE_ARTIFACT:
            return artifacts.path(a.digest)
    return None


def job_verdict(store: Store, artifacts: ArtifactStore, a_id: str, b_id: str) -> Verdict:
    """The verdict of job b against job a; `incomparable` while either has no result."""
    a, b = store.get_job(a_id), store.get_job(b_id)
    missing = [
        f"{side} is {j.status} without a result" for side, j in (("a", a), ("b", b)) if j.result is None
    ]
    if missing:
        return incomparable(a_id, b_id, "; ".join(missing))
    return compare(
        Result.model_validate(a.result),
        Result.model_validate(b.result),
        state_path(store, artifacts, a_id),
        state_path(store, artifacts, b_id),
    )


def rerun_verdict(
    store: Store, artifacts: ArtifactStore, original_id: str, rerun: Result, rerun_state: Path | None
) -> Verdict:
    """The verdict of a just-finished re-run, before its own row is final."""
    original = store.get_job(original_id)
    if original.result is None:
        return incomparable(original_id, rerun.job_id, f"original ended {original.status} without a result")
    state = rerun_state if rerun_state is not None and rerun_state.exists() else None
    return compare(
        Result.model_validate(original.result), rerun, state_path(store, artifacts, original_id), state
    )
