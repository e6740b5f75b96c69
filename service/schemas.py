"""API schemas, named by role (JobPublic, JobsPublic, …); separate from rows and from the spec."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from reprotrain.bisect import BisectReport, PreflightRecord, offer_bisect
from reprotrain.fingerprint import Fingerprint
from reprotrain.isolation import Isolation
from reprotrain.result import DeterminismRecord, JobError, Resume
from reprotrain.store.repo import RESULT_PARTS, NewJob, as_utc
from reprotrain.store.tables import JobRow
from reprotrain.verdict import Verdict

SPEC_EXAMPLE = {
    "name": "mlp",
    "entrypoint": "reprotrain.examples.mlp:train",
    "params": {"epochs": 3, "lr": 0.01},
    "seed": 1234,
    "determinism": {"policy": "strict"},
    "device": "cpu",
    "track": {"digest_every": 1},
}


class ErrorDetail(BaseModel):
    code: str = Field(examples=["spec_invalid"])
    message: str = Field(examples=["unknown field"])
    field: str | None = Field(None, examples=["learning_rate"])


class ErrorBody(BaseModel):
    error: ErrorDetail


class JobPublic(BaseModel):
    id: str
    name: str
    status: str
    queue: str
    spec: dict[str, Any]
    spec_digest: str
    bundle: str | None
    rerun_of: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    cancel_requested: bool
    error: JobError | None
    metrics: dict[str, Any] | None
    env_digest: str | None
    digests: dict[str, Any] | None = Field(None, description="model, optimizer, files, stdout")
    timing: dict[str, Any] | None = Field(None, description="user_s (the job's own run time), duration_s, …")
    verdict: Verdict | None = Field(None, description="for a re-run: its verdict against the original")
    isolation: Isolation | None = Field(None, description="how the run was confined: mode, network, uid")
    bisect: BisectReport | None = Field(
        None, description="a bisect job's report: the first differing op; or a failed pre-flight's"
    )
    preflight: PreflightRecord | None = Field(None, description="the pre-flight check the run passed")
    integrity_error: dict[str, Any] | None = Field(
        None, description="set once a stored artifact of this job was found changed: digest, actual, artifact"
    )
    checkpoint: dict[str, Any] | None = Field(
        None, description="the latest stored checkpoint: seq, step, logs, epoch, attempt, worker, queue"
    )
    resumes: list[Resume] = Field(
        default_factory=list, description="each attempt that went on from an earlier one's checkpoint"
    )

    @classmethod
    def from_row(cls, row: JobRow | NewJob) -> JobPublic:
        parts = getattr(row, "parts", None)  # a light row (Store.get_job): the result's parts only
        if parts is None:
            parts = {k: (row.result or {}).get(k) for k in RESULT_PARTS}

        return cls(
            id=row.id,
            name=row.name,
            status=row.status,
            queue=row.queue,
            spec=row.spec,
            spec_digest=row.spec_digest,
            bundle=row.bundle,
            rerun_of=row.rerun_of,
            created_at=utc(row.created_at),
            started_at=utc(row.started_at),  # type: ignore[arg-type]
            finished_at=utc(row.finished_at),
            attempts=row.attempts,
            cancel_requested=row.cancel_requested,
            error=JobError.model_validate(row.error) if row.error else None,
            metrics=row.metrics,
            env_digest=row.env_digest,
            digests=parts["digests"],
            timing=parts["timing"],
            verdict=offer_bisect(Verdict.model_validate(row.verdict), row.spec) if row.verdict else None,
            isolation=Isolation.model_validate(parts["isolation"]) if parts["isolation"] else None,
            integrity_error=getattr(row, "integrity_error", None),
            bisect=parts.get("bisect"),
            preflight=parts.get("preflight"),
            checkpoint=(getattr(row, "checkpoint", None) or {}).get("latest"),
            # the result's once it ended (with each attempt's outcome), the worker's record while it runs
            resumes=parts.get("resumes") or (getattr(row, "checkpoint", None) or {}).get("resumes", []),
        )


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int = Field(description="jobs matching the filter, across all pages")
    limit: int
    offset: int


class RunPublic(BaseModel):
    """One row of the runs table: what a list shows, read without the large JSON columns."""

    id: str
    name: str
    status: str
    queue: str
    tags: list[str]
    project: str | None
    params: dict[str, Any]
    seed: int | None
    policy: str | None
    rerun_of: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None = Field(description="started to finished (to now while running)")
    attempts: int
    metrics: dict[str, Any] | None = Field(description="final metrics")
    verdict: str | None = Field(description="a re-run's verdict kind")
    diverged_at: int | None = Field(description="a diverged re-run's first differing step")
    error_type: str | None

    @classmethod
    def from_row(cls, row: Any, facts: dict[str, Any], at: datetime) -> RunPublic:
        started, finished = utc(row.started_at), utc(row.finished_at)
        duration = ((finished or at) - started).total_seconds() if started else None
        return cls(
            id=row.id,
            name=row.name,
            status=row.status,
            queue=row.queue,
            tags=[t for t in (row.tags or "").split(",") if t],
            project=facts.get("project") if isinstance(facts.get("project"), str) else None,
            params=facts.get("params") if isinstance(facts.get("params"), dict) else {},
            seed=facts.get("seed") if isinstance(facts.get("seed"), int) else None,
            policy=facts.get("policy") if isinstance(facts.get("policy"), str) else None,
            rerun_of=row.rerun_of,
            created_at=utc(row.created_at),  # type: ignore[arg-type]
            started_at=started,
            finished_at=finished,
            duration_s=duration,
            attempts=row.attempts,
            metrics=row.metrics,
            verdict=row.verdict_kind,
            diverged_at=facts.get("diverged_at") if isinstance(facts.get("diverged_at"), int) else None,
            error_type=(row.error or {}).get("type"),
        )


class RunsPublic(BaseModel):
    data: list[RunPublic]
    count: int = Field(description="jobs matching the filter, across all pages")
    limit: int
    offset: int


class SeriesPublic(BaseModel):
    """A job's trace as chart columns: every entry in range (`exact`), or per-bucket first, last,
    min and max of each metric plus the steps asked to be kept (`keep`)."""

    status: str
    count: int = Field(description="trace entries in the range")
    exact: bool
    steps: list[int]
    metrics: dict[str, list[float | None]] = Field(description="one value per step; null: not a number")


def utc(t: datetime | None) -> datetime | None:
    return None if t is None else as_utc(t)


class DeletedPublic(BaseModel):
    id: str
    artifacts_removed: int = Field(description="stored files deleted: no other job held them")
    bytes_freed: int
    artifacts_kept: int = Field(
        description="files no job holds, used within REPROTRAIN_ARTIFACT_GRACE_S: a later sweep takes them"
    )


class CancelPublic(BaseModel):
    id: str
    status: str = Field(description="CANCELED at once if queued; RUNNING until its worker stops it")


class BundlePublic(BaseModel):
    digest: str = Field(examples=["sha256:" + "0" * 64])
    size: int


class ArtifactPublic(BaseModel):
    name: str
    digest: str
    size: int


class ArtifactsPublic(BaseModel):
    data: list[ArtifactPublic]
    count: int


class FingerprintPublic(BaseModel):
    env_digest: str | None = Field(description="digest of what in the fingerprint can change result bits")
    fingerprint: Fingerprint | None
    determinism: DeterminismRecord | None
    inputs: dict[str, Any] = Field(description="each input's content digest, by name")
    nondeterministic_ops: list[dict[str, Any]] = Field(
        default_factory=list, description="ops torch warned about (policy warn): op, count, message"
    )


class TracePublic(BaseModel):
    status: str
    data: list[dict[str, Any]]
    count: int = Field(description="entries in the whole trace so far")
    total: int | None = Field(None, description="while running: the step count the job declared, if it did")


class StoredResultPublic(BaseModel):
    result: dict[str, Any] = Field(description="the result exactly as stored")
    verdict: dict[str, Any] | None = Field(None, description="a re-run's verdict exactly as stored")


class WorkerPublic(BaseModel):
    id: str = Field(description="the worker's name, the lease owner of the jobs it runs")
    host: str
    queues: list[str]
    version: str
    isolation: str | None = Field(description="how it confines jobs (known once it has run one)")
    static_digest: str | None = Field(
        description="digest of its static environment (Python, torch, BLAS, image)"
    )
    gpus: list[str] = Field(
        default_factory=list, description="the GPU models its jobs see, as a job records them"
    )
    started_at: datetime
    last_seen_at: datetime
    alive: bool = Field(description="seen within the last PRESENCE_TTL_S seconds")


class WorkersPublic(BaseModel):
    data: list[WorkerPublic]
    count: int
    alive: int


class KeyPublic(BaseModel):
    key_id: str
    public_key: str = Field(description="raw ed25519 public key, hex")
    owner: str = Field(description="the worker host and key file that registered it")
    created_at: datetime


class KeysPublic(BaseModel):
    data: list[KeyPublic]
    count: int
