"""Verdicts between stored jobs: the re-run check the service records and serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reprotrain.artifacts import ArtifactStore
from reprotrain.bisect import Run, bisect_specs
from reprotrain.compare import CheckpointDiffer, compare
from reprotrain.errors import ArtifactTampered, ResultInvalid
from reprotrain.outputs import RunFiles
from reprotrain.result import Result, parse_result
from reprotrain.spec import JobSpec
from reprotrain.store import Store
from reprotrain.verdict import Verdict, incomparable


def stored_files(store: Store, artifacts: ArtifactStore, job_id: str) -> RunFiles:
    """A stored job's files, by artifact name, from the content-addressed store; each checked
    against its digest before a verdict reads it (ArtifactTampered where it does not match)."""
    names = {a.name: a.digest for a in store.artifacts(job_id)}
    checked: dict[str, Path] = {}

    def find(name: str) -> Path | None:
        digest = names.get(name)
        path = artifacts.path(digest) if digest else None
        if path is None or not path.is_file():
            return None
        if name not in checked:
            checked[name] = artifacts.verified(str(digest), f"{name} of job {job_id}")
        return checked[name]

    return RunFiles(find)


def _tampered(store: Store, a_id: str, b_id: str, e: ArtifactTampered) -> Verdict:
    """No verdict from changed bytes: the jobs holding them are marked, and the verdict says why."""
    store.mark_tampered(e)
    return incomparable(a_id, b_id, f"{e.code}: {e.message}")


def stored_result(job_id: str, data: dict[str, Any]) -> Result:
    """A result as the store holds it; one that no longer reads is ResultInvalid, naming the job."""
    return parse_result(data, f"the stored result of job {job_id}")


def job_verdict(store: Store, artifacts: ArtifactStore, a_id: str, b_id: str) -> Verdict:
    """The verdict of job b against job a; `incomparable` while either has no readable result.

    For a re-run against its original this is the verdict its worker stored (it had torch to open
    checkpoints with; the API may not)."""
    a, b = store.get_job(a_id), store.get_job(b_id)
    if b.rerun_of == a_id and b.verdict:
        return Verdict.model_validate(b.verdict)
    missing = [
        f"{side} is {j.status} without a result" for side, j in (("a", a), ("b", b)) if j.result is None
    ]
    if missing:
        return incomparable(a_id, b_id, "; ".join(missing))
    try:
        ra, rb = stored_result(a_id, a.result), stored_result(b_id, b.result)  # type: ignore[arg-type]
    except ResultInvalid as e:
        return incomparable(a_id, b_id, e.message)
    try:
        return compare(ra, rb, stored_files(store, artifacts, a_id), stored_files(store, artifacts, b_id))
    except ArtifactTampered as e:
        return _tampered(store, a_id, b_id, e)
    except OSError as e:  # a stored file went missing or unreadable under us
        return incomparable(a_id, b_id, f"the verdict could not be computed: {type(e).__name__}: {e}")


def rerun_verdict(
    store: Store,
    artifacts: ArtifactStore,
    original_id: str,
    rerun: Result,
    rerun_dir: Path,
    checkpoints: CheckpointDiffer | None = None,
) -> Verdict:
    """The verdict of a just-finished re-run, before its own row is final. Never raises for the
    original's sake: a re-run that ran is stored, with `incomparable` if the original cannot be read."""
    original = store.get_job(original_id)
    if original.result is None:
        return incomparable(original_id, rerun.job_id, f"original ended {original.status} without a result")
    try:
        before = stored_result(original_id, original.result)
    except ResultInvalid as e:
        return incomparable(original_id, rerun.job_id, e.message)
    files = stored_files(store, artifacts, original_id), RunFiles.local(rerun_dir)
    try:
        return compare(before, rerun, *files, checkpoints=checkpoints)
    except ArtifactTampered as e:
        return _tampered(store, original_id, rerun.job_id, e)


def job_bisect_specs(
    store: Store, artifacts: ArtifactStore, a_id: str, b_id: str, live_queues: set[str]
) -> list[JobSpec]:
    """The specs of a bisect between two stored jobs (`reprotrain.bisect.bisect_specs`)."""
    verdict = job_verdict(store, artifacts, a_id, b_id)
    runs = []
    for j in (store.get_job(a_id), store.get_job(b_id)):
        fingerprint = (j.result or {}).get("fingerprint")
        trace = (j.result or {}).get("trace")
        steps = len(trace) if isinstance(trace, list) else 0
        code = (j.result or {}).get("code")
        digest = code.get("digest") if isinstance(code, dict) else None
        fp = fingerprint if isinstance(fingerprint, dict) else None
        runs.append(Run.of(j.id, j.spec, j.spec_digest, fp, steps, code=digest))
    return bisect_specs(runs[0], runs[1], verdict, live_queues)
