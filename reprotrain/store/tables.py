"""Database rows. Separate from the job spec and the API schemas: a column change moves no digest."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# PostgreSQL's json, not jsonb: it keeps the text as written, so a value reads back as it was stored.
# jsonb rewrites it (1e20 reads back as the int 100000000000000000000, -0.0 as 0.0, an object's
# keys shortest first), which changed a job's params and a spec's digest, and put a step's tensors
# out of the model's order. Nothing here needs jsonb's operators or indexes.
Json = JSON()
When = DateTime(timezone=True)


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    queue: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(Json)
    spec_digest: Mapped[str] = mapped_column(String(64), index=True)
    bundle: Mapped[str | None] = mapped_column(String(71))
    rerun_of: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(When, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(When)
    started_at: Mapped[datetime | None] = mapped_column(When)
    finished_at: Mapped[datetime | None] = mapped_column(When)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(When)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[dict[str, Any] | None] = mapped_column(Json)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(Json)
    env_digest: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[dict[str, Any] | None] = mapped_column(Json)
    verdict: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # set when a stored artifact of the job no longer matches its digest (never cleared by a read)
    integrity_error: Mapped[dict[str, Any] | None] = mapped_column(Json)
    manifest: Mapped[dict[str, Any] | None] = mapped_column(Json)  # the signed run manifest
    # {"latest": {seq, step, logs, attempt, worker, queue, files}, "resumes": [Resume, …]}: where a
    # later attempt goes on from (its files are this job's `_job/checkpoint/…` artifacts)
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # for the runs table, which filters and sorts without reading the JSON columns
    tags: Mapped[str | None] = mapped_column(String(1200))  # ",a,b," (spec tags; None: no tags)
    verdict_kind: Mapped[str | None] = mapped_column(String(24), index=True)  # a re-run's verdict

    __table_args__ = (Index("ix_jobs_created_at_id", "created_at", "id"),)


class ArtifactRow(Base):
    """A file a job produced, by name, stored content-addressed under its digest."""

    __tablename__ = "artifacts"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(1024), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)


class LogChunkRow(Base):
    """Bytes of a job's stdout, stderr or event stream, shipped by the worker as they appear."""

    __tablename__ = "log_chunks"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    stream: Mapped[str] = mapped_column(String(8))
    offset: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class BundleRow(Base):
    __tablename__ = "bundles"

    digest: Mapped[str] = mapped_column(String(71), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(When)


class WorkerKeyRow(Base):
    """A worker's public signing key (ed25519, hex): what every manifest it signed is checked with."""

    __tablename__ = "worker_keys"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(When)


class WorkerRow(Base):
    """A worker, as it last said it was alive: what `GET /v1/workers` lists."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # its lease owner name
    host: Mapped[str] = mapped_column(String(200))
    queues: Mapped[list[str]] = mapped_column(Json)
    version: Mapped[str] = mapped_column(String(32))
    isolation: Mapped[str | None] = mapped_column(String(16))  # known once its fork server started
    static_digest: Mapped[str | None] = mapped_column(String(64))  # digest of its static environment
    # {"static": StaticFacts, "cuda": CudaFacts | None}: what a refused re-run is told differs
    facts: Mapped[dict[str, Any] | None] = mapped_column(Json)
    started_at: Mapped[datetime] = mapped_column(When)
    last_seen_at: Mapped[datetime] = mapped_column(When, index=True)
