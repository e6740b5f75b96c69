"""The repository: every read and every state change of jobs, each change one conditional UPDATE.

Transitions live here and only here:

    QUEUED ──claim──► RUNNING ──finish──► SUCCEEDED | FAILED | CANCELED | TIMED_OUT
      │                 │ └─lease expired─► QUEUED (attempts left) | FAILED
      └──cancel──► CANCELED

A conditional UPDATE that matches no row means another actor won the race; the caller is told,
and nothing is overwritten.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Engine, create_engine, delete, event, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from sqlalchemy.orm import Session, aliased, defer, sessionmaker

from reprotrain.errors import AmbiguousId, ArtifactTampered, Conflict, NotFound
from reprotrain.result import JobError, Result
from reprotrain.spec import JobSpec
from reprotrain.status import Status
from reprotrain.store.tables import ArtifactRow, BundleRow, JobRow, LogChunkRow, WorkerKeyRow, WorkerRow
from reprotrain.verdict import Verdict
from reprotrain.wire import CHECKPOINT_ARTIFACT_PREFIX

_INSERT_JOB = insert(JobRow)
_NEWEST_FIRST = (JobRow.created_at.desc(), JobRow.id.desc())  # ix_jobs_created_at_id, read backwards
UNSENT_GRACE_S = 10  # a job is sent right after its row commits; give that moment to happen


@dataclass(slots=True)
class NewJob:
    """A job as `create_jobs` inserted it: what JobRow holds for a QUEUED job, without the ORM."""

    id: str
    name: str
    queue: str
    spec: dict[str, Any]
    spec_digest: str
    bundle: str | None
    rerun_of: str | None
    created_at: datetime
    sent_at: datetime
    status: str = Status.QUEUED.value
    attempts: int = 0
    cancel_requested: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    env_digest: str | None = None
    result: dict[str, Any] | None = None
    verdict: dict[str, Any] | None = None
    tags: str | None = None


def tags_column(tags: list[str]) -> str | None:
    """Spec tags as the runs table stores them: ",a,b," (a filter matches ",tag,"), None for none."""
    return "," + ",".join(tags) + "," if tags else None


# what a new job sets; the other columns stay SQL NULL (not JSON 'null', which costs an encode each)
_NEW_COLUMNS = ("id", "name", "queue", "spec", "spec_digest", "bundle", "rerun_of")
_NEW_COLUMNS += ("created_at", "sent_at", "status", "attempts", "cancel_requested", "tags")
_PG_ROW = "(" + ", ".join("%s::json" if c == "spec" else "%s" for c in _NEW_COLUMNS) + ")"
_PG_INSERT = f"INSERT INTO {JobRow.__tablename__} ({', '.join(_NEW_COLUMNS)}) VALUES "


def new_rows(jobs: list[NewJob]) -> list[dict[str, Any]]:
    """The inserted columns of new jobs, as `pg_insert` and the Core insert take them."""
    return [{k: getattr(job, k) for k in _NEW_COLUMNS} for job in jobs]


def pg_insert(values: list[dict[str, Any]]) -> tuple[str, tuple[Any, ...]]:
    """New jobs as one multi-row INSERT for PostgreSQL: one statement is one transaction, so the
    connection runs in autocommit and a group commit is one round trip, not BEGIN, the rows and
    COMMIT (measured: 350 → 150 µs of CPU for one job, 75 → 50 µs a job in batches of 8)."""
    return _PG_INSERT + ", ".join([_PG_ROW] * len(values)), _pg_params(values)


def pg_insert_raw(values: list[dict[str, Any]]) -> tuple[str, tuple[Any, ...]]:
    """`pg_insert` with libpq's own `$n` placeholders, for psycopg's raw cursor: no query text to
    parse each burst (psycopg caches its parse only for statements of at most 50 parameters, and
    a burst of 4 has 52; measured: 112–146 → 85–121 µs of CPU a job in bursts of 8)."""
    return _pg_raw_sql(len(values)), _pg_params(values)


def _pg_params(values: list[dict[str, Any]]) -> tuple[Any, ...]:
    return tuple(json.dumps(v[c]) if c == "spec" else v[c] for v in values for c in _NEW_COLUMNS)


@lru_cache(maxsize=64)
def _pg_raw_sql(rows: int) -> str:
    n = len(_NEW_COLUMNS)
    cell = lambda r, i, c: f"${r * n + i + 1}" + ("::json" if c == "spec" else "")  # noqa: E731
    return _PG_INSERT + ", ".join(
        "(" + ", ".join(cell(r, i, c) for i, c in enumerate(_NEW_COLUMNS)) + ")" for r in range(rows)
    )


# the runs table's columns: everything but the large JSON ones (spec, result, manifest, verdict)
RUN_COLUMNS = (
    JobRow.id, JobRow.name, JobRow.status, JobRow.queue, JobRow.tags, JobRow.rerun_of,
    JobRow.created_at, JobRow.started_at, JobRow.finished_at, JobRow.attempts,
    JobRow.metrics, JobRow.verdict_kind, JobRow.error, JobRow.spec_digest,
)  # fmt: skip


FINAL = [s.value for s in Status if s.is_final]
MIN_PREFIX = 6  # the shortest job id prefix the API and CLI take
_HEX = re.compile(r"[0-9a-f]{1,31}")
# what a job's public view shows of its result
RESULT_PARTS = ("digests", "timing", "isolation", "bisect", "preflight", "resumes")


def _light(q: Any) -> Any:
    """A JobRow query without the result and manifest columns, plus the result's small parts."""
    parts = [JobRow.result[k] for k in RESULT_PARTS]
    return q.add_columns(*parts).options(
        defer(JobRow.result, raiseload=True), defer(JobRow.manifest, raiseload=True)
    )


def _with_parts(found: Any) -> JobRow:
    row = found[0]
    row.parts = dict(zip(RESULT_PARTS, found[1:], strict=True))
    return row


def _checkpoint_rows(job_id: str) -> Any:
    return (ArtifactRow.job_id == job_id) & ArtifactRow.name.startswith(
        CHECKPOINT_ARTIFACT_PREFIX, autoescape=True
    )


class Pending(NamedTuple):
    """A job to insert: its spec, the job it re-runs, and the queue it goes to when not the
    spec's (a re-run routed to its original's environment: the spec, and so its digest, stay)."""

    spec: JobSpec
    rerun_of: str | None = None
    queue: str | None = None


@dataclass(frozen=True, slots=True)
class RunFilter:
    """What the runs table (and the job list) can filter on; every field narrows."""

    status: list[str] | None = None
    name: str | None = None  # exact
    search: str | None = None  # part of the name, or the start of the id
    tag: str | None = None
    verdict: list[str] | None = None  # verdict kinds; "none": jobs without one
    rerun_of: str | None = None
    project: str | None = None
    params: tuple[tuple[str, Any], ...] = ()  # (dotted path under spec.params, JSON value)

    def where(self, q: Any) -> Any:
        if self.status:
            q = q.where(JobRow.status.in_(self.status))
        if self.name:
            q = q.where(JobRow.name == self.name)
        if self.search:
            q = q.where(
                JobRow.name.contains(self.search, autoescape=True)
                | JobRow.id.startswith(self.search.lower(), autoescape=True)
            )
        if self.tag:
            q = q.where(JobRow.tags.contains(f",{self.tag},", autoescape=True))
        if self.verdict:
            kinds = [v for v in self.verdict if v != "none"]
            cond = JobRow.verdict_kind.in_(kinds)
            if "none" in self.verdict:
                cond = cond | JobRow.verdict_kind.is_(None)
            q = q.where(cond)
        if self.rerun_of:
            q = q.where(JobRow.rerun_of == self.rerun_of)
        if self.project:
            q = q.where(JobRow.spec["project"].as_string() == self.project)
        for path, value in self.params:
            element = JobRow.spec[("params", *path.split("."))]
            if isinstance(value, bool):
                q = q.where(element.as_boolean() == value)
            elif isinstance(value, int | float):
                q = q.where(element.as_float() == float(value))
            else:
                q = q.where(element.as_string() == str(value))
        return q


def store_unavailable(e: BaseException) -> bool:
    """The database could not be reached or dropped the connection (as opposed to refusing a
    statement): what a retry may cure, and what the API answers 503 for."""
    if isinstance(e, SQLAlchemyTimeout | OperationalError | InterfaceError):
        return True
    return isinstance(e, DBAPIError) and bool(e.connection_invalidated)


def now() -> datetime:
    return datetime.now(UTC)


def as_utc(t: datetime) -> datetime:
    """A stored time as an aware UTC time (SQLite hands back naive ones, PostgreSQL aware)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def make_engine(url: str, *, pre_ping: bool = True) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL: safe against process crashes
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=pre_ping)


def clean_json(obj: Any) -> Any:
    """PostgreSQL's JSON refuses NUL characters; nothing a job prints may make a commit fail."""
    if isinstance(obj, str):
        return obj.replace("\x00", "\ufffd")
    if isinstance(obj, dict):
        return {clean_json(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clean_json(v) for v in obj]
    return obj


class Store:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        # submits: a ping before every group commit was a sixth of PostgreSQL's submit cost; a
        # dropped connection is retried instead (create_jobs)
        self._multirow = not url.startswith("sqlite")
        self._insert_engine = (
            create_engine(url, pool_pre_ping=False, isolation_level="AUTOCOMMIT")
            if self._multirow
            else self.engine
        )
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time and its busy handler sleeps in growing steps; threads of
        # one process queue on a lock instead (measured: 283 → 342 submits/s under 8 clients)
        self._lock: Any = threading.RLock() if url.startswith("sqlite") else nullcontext()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._lock, self._session() as s, s.begin():
            yield s

    def close(self) -> None:
        self.engine.dispose()
        self._insert_engine.dispose()

    # ---- jobs: create and read -------------------------------------------------------------
    def create_job(self, spec: JobSpec, *, rerun_of: str | None = None) -> NewJob:
        return self.create_jobs([(spec, rerun_of)])[0]

    def create_jobs(self, items: Sequence[tuple[JobSpec, str | None] | Pending]) -> list[NewJob]:
        """Insert QUEUED jobs in one transaction (group commit: one commit for a burst). Each is a
        `Pending` (or a (spec, rerun_of) pair); its row's queue is the spec's unless it names one.

        Core insert of only the columns a new job has (the rest are NULL or their defaults), and
        plain records back instead of ORM rows: together a third of the per-submit cost before.
        """
        jobs = self.new_jobs(items)
        values = new_rows(jobs)
        try:
            self._insert(values)
        except DBAPIError as e:
            if not e.connection_invalidated:
                raise
            # the connection was gone (a database restart): the pool dropped it; once more, with
            # the same ids, so a commit that did land before the drop is not stored twice
            try:
                self._insert(values)
            except IntegrityError:
                if len(self.existing([j.id for j in jobs])) != len(jobs):
                    raise
        return jobs

    @staticmethod
    def new_jobs(items: Sequence[tuple[JobSpec, str | None] | Pending]) -> list[NewJob]:
        """The records `create_jobs` inserts for `items`, each with a new id; nothing stored."""
        t = now()
        return [
            NewJob(
                id=uuid.uuid4().hex,
                name=spec.name,
                queue=queue or spec.queue,
                spec=spec.canonical(),
                spec_digest=spec.digest,
                bundle=spec.bundle,
                rerun_of=rerun_of,
                created_at=t,
                sent_at=t,  # the API sends right after this commit; the reconciler covers a crash
                tags=tags_column(spec.tags),
            )
            for spec, rerun_of, queue in (Pending(*item) for item in items)
        ]

    def _insert(self, values: list[dict[str, Any]]) -> None:
        with self._lock, self._insert_engine.begin() as conn:  # Core, no Session: half the ORM's CPU
            if self._multirow:
                conn.exec_driver_sql(*pg_insert(values))
            else:
                conn.execute(_INSERT_JOB, values)

    def existing(self, job_ids: list[str]) -> set[str]:
        with self.session() as s:
            return set(s.scalars(select(JobRow.id).where(JobRow.id.in_(job_ids))))

    def get_job(self, job_id: str, *, light: bool = False) -> JobRow:
        """The job's row. `light`: without its result and manifest, which can be megabytes (a long
        trace); the parts of the result a client is shown come as `row.parts` (RESULT_PARTS)."""
        with self.session() as s:
            if light:
                found = s.execute(_light(select(JobRow).where(JobRow.id == job_id))).first()
                row = _with_parts(found) if found else None
            else:
                row = s.get(JobRow, job_id)
        if row is None:
            raise NotFound(f"no job with id {job_id!r}", field="job_id")
        return row

    def fingerprint(self, job_id: str) -> dict[str, Any] | None:
        """The environment a job recorded (its result's fingerprint), read by JSON path: a
        re-run's routing needs it, not the whole result."""
        with self.session() as s:
            found = s.execute(select(JobRow.result["fingerprint"]).where(JobRow.id == job_id)).first()
        if found is None:
            raise NotFound(f"no job with id {job_id!r}", field="job_id")
        return found[0] if isinstance(found[0], dict) else None

    def resolve_id(self, ref: str) -> str:
        """A job's id from itself or from a prefix of at least 6 characters that one job has."""
        ref = ref.strip().lower()
        if len(ref) == 32:
            return ref  # a whole id: whether it exists is for the caller's read to find
        if not _HEX.fullmatch(ref):
            raise NotFound(f"no job with id {ref!r}", field="job_id")
        if len(ref) < MIN_PREFIX:
            raise NotFound(f"no job with id {ref!r} (a prefix needs {MIN_PREFIX} characters)", field="job_id")
        with self.session() as s:  # ids are lowercase hex: every id starting with ref is in [ref, ref+"g")
            q = select(JobRow.id).where(JobRow.id >= ref, JobRow.id < ref + "g").order_by(JobRow.id).limit(6)
            found = list(s.scalars(q))
        if not found:
            raise NotFound(f"no job with id {ref!r}", field="job_id")
        if len(found) > 1:
            more = ", …" if len(found) > 5 else ""
            raise AmbiguousId(
                f"{ref!r} starts more than one job's id: {', '.join(found[:5])}{more}; give more of it",
                field="job_id",
            )
        return found[0]

    def trace(self, job_id: str) -> list[dict[str, Any]]:
        """A finished job's stored trace (only that part of its result)."""
        with self.session() as s:
            return list(s.scalar(select(JobRow.result["trace"]).where(JobRow.id == job_id)) or [])

    def list_jobs(
        self, where: RunFilter | None = None, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[JobRow], int]:
        """Newest first, light (see get_job); the total counts every match, not only this page."""
        where = where or RunFilter()
        with self.session() as s:
            total = s.scalar(where.where(select(func.count()).select_from(JobRow))) or 0
            q = where.where(select(JobRow)).order_by(*_NEWEST_FIRST).limit(limit).offset(offset)
            return [_with_parts(r) for r in s.execute(_light(q)).all()], total

    def list_runs(
        self, where: RunFilter | None = None, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[Any], int]:
        """The runs table: light rows (no spec, result or manifest), newest first, and the total."""
        where = where or RunFilter()
        with self.session() as s:
            total = s.scalar(where.where(select(func.count()).select_from(JobRow))) or 0
            q = where.where(select(*RUN_COLUMNS)).order_by(*_NEWEST_FIRST).limit(limit).offset(offset)
            return list(s.execute(q).all()), total

    def run_facts(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Seed, policy and the verdict's first differing step of these jobs, read out of their
        spec and verdict in the database (one page of the runs table; never a result)."""
        if not job_ids:
            return {}
        cols = (
            JobRow.id,
            JobRow.spec["seed"],
            JobRow.spec["determinism"]["policy"],
            JobRow.verdict["divergence"]["step"],
            JobRow.spec["project"],
            JobRow.spec["params"],
        )
        with self.session() as s:
            rows = s.execute(select(*cols).where(JobRow.id.in_(job_ids))).all()
        keys = ("seed", "policy", "diverged_at", "project", "params")
        return {r[0]: dict(zip(keys, r[1:], strict=True)) for r in rows}

    def mark_sent(self, job_id: str) -> None:
        with self.session() as s:
            s.execute(update(JobRow).where(JobRow.id == job_id).values(sent_at=now()))

    def mark_unsent(self, job_ids: list[str]) -> None:
        """The broker did not take these: the reconciler's next pass sends the QUEUED ones."""
        with self.session() as s:
            s.execute(update(JobRow).where(JobRow.id.in_(job_ids)).values(sent_at=None))

    # ---- the worker's side -----------------------------------------------------------------
    def claim(self, job_id: str, owner: str, lease_s: float) -> bool:
        """QUEUED, or RUNNING with an expired lease → RUNNING for `owner`. False: not ours."""
        t = now()
        stmt = (
            update(JobRow)
            .where(
                JobRow.id == job_id,
                JobRow.cancel_requested.is_(False),
                or_(
                    JobRow.status == Status.QUEUED.value,
                    (JobRow.status == Status.RUNNING.value) & (JobRow.lease_expires_at < t),
                ),
            )
            .values(
                status=Status.RUNNING.value,
                lease_owner=owner,
                lease_expires_at=t + timedelta(seconds=lease_s),
                started_at=func.coalesce(JobRow.started_at, t),
                attempts=JobRow.attempts + 1,
            )
        )
        with self.session() as s:
            return s.execute(stmt).rowcount == 1

    def heartbeat(self, job_id: str, owner: str, lease_s: float) -> tuple[bool, bool]:
        """Renew the lease. Returns (still ours, cancel requested)."""
        stmt = (
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.lease_owner == owner, JobRow.status == Status.RUNNING.value)
            .values(lease_expires_at=now() + timedelta(seconds=lease_s))
            .returning(JobRow.cancel_requested)
        )
        with self.session() as s:
            flag = s.execute(stmt).scalar_one_or_none()
        return flag is not None, bool(flag)

    def append_log(self, job_id: str, stream: str, offset: int, data: bytes) -> None:
        with self.session() as s:
            s.add(LogChunkRow(job_id=job_id, stream=stream, offset=offset, data=data))

    def read_log(self, job_id: str, stream: str, offset: int = 0) -> bytes:
        """Bytes of a stream from `offset` on, as shipped so far."""
        q = (
            select(LogChunkRow.offset, LogChunkRow.data)
            .where(
                LogChunkRow.job_id == job_id,
                LogChunkRow.stream == stream,
                LogChunkRow.offset + func.length(LogChunkRow.data) > offset,
            )
            .order_by(LogChunkRow.offset)
        )
        with self.session() as s:
            parts = [(o, bytes(d)) for o, d in s.execute(q)]
        return b"".join(d[max(0, offset - o) :] for o, d in parts)

    def finish(
        self,
        job_id: str,
        owner: str,
        status: Status,
        *,
        result: Result | None,
        error: JobError | None,
        artifacts: list[tuple[str, str, int]],
        verdict: Verdict | None = None,
        manifest: dict[str, Any] | None = None,
        attempt: int | None = None,
    ) -> bool:
        """Commit the final status with its result, artifacts, verdict and signed manifest, or nothing.

        The job must still be this owner's, or (given its `attempt`) have gone back to the queue
        after this attempt without anyone claiming it since: a lease that ran out while the
        database was away does not throw away a finished run."""
        values: dict[str, Any] = {
            "status": status.value,
            "finished_at": now(),
            "lease_owner": None,
            "lease_expires_at": None,
            "error": clean_json(error.model_dump(mode="json")) if error else None,
            "verdict": clean_json(verdict.model_dump(mode="json")) if verdict else None,
            "verdict_kind": verdict.verdict if verdict else None,
            "manifest": manifest,
        }
        if result is not None:
            values |= {
                "result": clean_json(result.model_dump(mode="json")),
                "metrics": clean_json(result.metrics),
                "env_digest": result.env_digest,
            }
        ours = (JobRow.lease_owner == owner) & (JobRow.status == Status.RUNNING.value)
        if attempt is not None:
            ours = ours | ((JobRow.status == Status.QUEUED.value) & (JobRow.attempts == attempt))
        stmt = update(JobRow).where(JobRow.id == job_id, ours).values(**values)
        with self.session() as s:
            if s.execute(stmt).rowcount != 1:
                s.rollback()
                return False
            s.execute(delete(ArtifactRow).where(_checkpoint_rows(job_id)))  # ended: nothing to resume
            s.add_all(ArtifactRow(job_id=job_id, name=n, digest=d, size=z) for n, d, z in artifacts)
        return True

    # ---- checkpoints -----------------------------------------------------------------------------
    def record_checkpoint(
        self,
        job_id: str,
        owner: str,
        latest: dict[str, Any],
        files: list[tuple[str, str, int]],
        queue: str | None,
    ) -> bool:
        """A running job's newest stored checkpoint: its record, its files as the job's
        `_job/checkpoint/…` artifacts (the previous one's rows go), and the queue a later attempt is
        sent to (its environment's). Only while the job is this owner's; False when it is not."""
        with self.session() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None or row.lease_owner != owner or row.status != Status.RUNNING.value:
                return False
            row.checkpoint = {**(row.checkpoint or {}), "latest": latest}
            if queue is not None:
                row.queue = queue
            s.execute(delete(ArtifactRow).where(_checkpoint_rows(job_id)))
            s.add_all(
                ArtifactRow(job_id=job_id, name=CHECKPOINT_ARTIFACT_PREFIX + n, digest=d, size=z)
                for n, d, z in files
            )
        return True

    def record_resume(self, job_id: str, owner: str, resume: dict[str, Any]) -> list[dict[str, Any]]:
        """An attempt goes on from the latest checkpoint (or is labelled as not); every resume so far."""
        with self.session() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None or row.lease_owner != owner:
                return []
            resumes = [*(row.checkpoint or {}).get("resumes", []), resume]
            row.checkpoint = {**(row.checkpoint or {}), "resumes": resumes}
            return resumes

    # ---- workers ---------------------------------------------------------------------------------
    def worker_seen(self, worker_id: str, **facts: Any) -> None:
        """A worker says it is alive (host, queues, version; isolation and static_digest once known)."""
        t = now()
        with self.session() as s:
            row = s.get(WorkerRow, worker_id)
            if row is None:
                s.add(WorkerRow(id=worker_id, started_at=t, last_seen_at=t, **facts))
            else:
                row.last_seen_at = t
                for key, value in facts.items():
                    if value is not None:
                        setattr(row, key, value)

    def worker_gone(self, worker_id: str) -> None:
        with self.session() as s:
            s.execute(delete(WorkerRow).where(WorkerRow.id == worker_id))

    def workers(self) -> list[WorkerRow]:
        with self.session() as s:
            return list(s.scalars(select(WorkerRow).order_by(WorkerRow.last_seen_at.desc())))

    def register_key(self, key_id: str, public_key: str, owner: str) -> None:
        """Record a worker's public key (once; a key already there keeps its first owner)."""
        try:
            with self.session() as s:
                if s.get(WorkerKeyRow, key_id) is None:
                    s.add(WorkerKeyRow(key_id=key_id, public_key=public_key, owner=owner, created_at=now()))
        except IntegrityError:  # a worker sharing the key registered it at the same moment
            pass

    def keys(self) -> list[WorkerKeyRow]:
        with self.session() as s:
            return list(s.scalars(select(WorkerKeyRow).order_by(WorkerKeyRow.created_at)))

    def mark_tampered(self, e: ArtifactTampered) -> int:
        """Record on every job holding the artifact that its stored bytes were changed (the first
        detection is kept); returns how many jobs were marked."""
        detail = {"digest": e.digest, "actual": e.actual, "artifact": e.what}
        detail["detected_at"] = now().isoformat()
        holders = select(ArtifactRow.job_id).where(ArtifactRow.digest == e.digest)
        stmt = (
            update(JobRow)
            .where(JobRow.id.in_(holders), JobRow.integrity_error.is_(None))
            .values(integrity_error=detail)
        )
        with self.session() as s:
            return int(s.execute(stmt).rowcount)

    def artifacts(self, job_id: str) -> list[ArtifactRow]:
        with self.session() as s:
            return list(
                s.scalars(select(ArtifactRow).where(ArtifactRow.job_id == job_id).order_by(ArtifactRow.name))
            )

    # ---- cancel, reaper, reconciler --------------------------------------------------------
    # ---- deletion ------------------------------------------------------------------------------
    def delete_job(self, job_id: str) -> list[str]:
        """Delete an ended job with its logs and artifact rows, in one transaction. Returns the
        artifact digests no job holds any more (their files may go). A job still queued or running,
        or the original of a re-run, is refused: its re-runs' verdicts are about it."""
        with self.session() as s:
            status = s.scalar(select(JobRow.status).where(JobRow.id == job_id))
            if status is None:
                raise NotFound(f"no job with id {job_id!r}", field="job_id")
            if status not in FINAL:
                raise Conflict(f"job {job_id} is {status}: cancel it, then delete it", field="job_id")
            reruns = list(s.scalars(select(JobRow.id).where(JobRow.rerun_of == job_id).limit(4)))
            if reruns:
                raise Conflict(
                    f"job {job_id} is the original of re-run(s) {', '.join(reruns[:3])}"
                    f"{', …' if len(reruns) > 3 else ''}: delete those first",
                    field="job_id",
                )
            digests = set(s.scalars(select(ArtifactRow.digest).where(ArtifactRow.job_id == job_id)))
            s.execute(delete(LogChunkRow).where(LogChunkRow.job_id == job_id))
            s.execute(delete(ArtifactRow).where(ArtifactRow.job_id == job_id))
            s.execute(delete(JobRow).where(JobRow.id == job_id, JobRow.status.in_(FINAL)))
            held = set(s.scalars(select(ArtifactRow.digest).where(ArtifactRow.digest.in_(digests))))
        return sorted(digests - held)

    def expired(self, before: datetime, limit: int = 500) -> list[str]:
        """Ended jobs that finished before `before` and are the original of no re-run that is kept
        (every re-run of theirs ended before it too), re-runs first: the retention sweep's work."""
        rerun = aliased(JobRow)
        kept_rerun = (
            select(rerun.id)
            .where(
                rerun.rerun_of == JobRow.id,
                ~(rerun.status.in_(FINAL) & (rerun.finished_at < before)),
            )
            .exists()
        )
        q = (
            select(JobRow.id)
            .where(JobRow.status.in_(FINAL), JobRow.finished_at < before, ~kept_rerun)
            .order_by(JobRow.rerun_of.is_(None), JobRow.finished_at)
            .limit(limit)
        )
        with self.session() as s:
            return list(s.scalars(q))

    def referenced(self, digests: list[str]) -> set[str]:
        """Which of these artifact digests some job holds."""
        with self.session() as s:
            return set(s.scalars(select(ArtifactRow.digest).where(ArtifactRow.digest.in_(digests))))

    def request_cancel(self, job_id: str) -> str:
        """QUEUED → CANCELED at once; RUNNING → flagged for its worker. Returns the status."""
        with self.session() as s:
            done = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == Status.QUEUED.value)
                .values(
                    status=Status.CANCELED.value,
                    finished_at=now(),
                    cancel_requested=True,
                    error={"type": "Canceled", "message": "canceled before it started"},
                )
            ).rowcount
            if done:
                return Status.CANCELED.value
            flagged = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == Status.RUNNING.value)
                .values(cancel_requested=True)
            ).rowcount
            if flagged:
                return Status.RUNNING.value
        job = self.get_job(job_id)
        raise Conflict(f"job {job_id} already ended with status {job.status}", field="job_id")

    def ended_since(self, after: datetime, limit: int = 1000) -> list[Any]:
        """(status, started_at, finished_at) of jobs that ended after `after`, oldest first: what
        the API's metrics count as finished."""
        q = (
            select(JobRow.status, JobRow.started_at, JobRow.finished_at)
            .where(JobRow.status.in_(FINAL), JobRow.finished_at > after)
            .order_by(JobRow.finished_at)
            .limit(limit)
        )
        with self.session() as s:
            return [tuple(r) for r in s.execute(q).all()]

    def reap(self, max_attempts: int) -> list[str]:
        """RUNNING jobs whose lease expired: CANCELED if a cancel was asked for (a cancel wins over
        a retry: `claim` would refuse it forever), else back to QUEUED while attempts remain, else
        FAILED."""
        t = now()
        expired = (JobRow.status == Status.RUNNING.value) & (JobRow.lease_expires_at < t)
        with self.session() as s:
            s.execute(
                update(JobRow)
                .where(expired, JobRow.cancel_requested.is_(True))
                .values(
                    status=Status.CANCELED.value,
                    finished_at=t,
                    lease_owner=None,
                    error={"type": "Canceled", "message": "canceled; its worker was lost before it stopped"},
                )
            )
            expired = expired & JobRow.cancel_requested.is_(False)
            failed = s.execute(
                update(JobRow)
                .where(expired, JobRow.attempts >= max_attempts)
                .values(
                    status=Status.FAILED.value,
                    finished_at=t,
                    lease_owner=None,
                    error={"type": "LeaseExpired", "message": f"worker lost {max_attempts} times; giving up"},
                )
            )
            requeued = s.execute(
                update(JobRow)
                .where(expired, JobRow.attempts < max_attempts)
                .values(status=Status.QUEUED.value, lease_owner=None, lease_expires_at=None, sent_at=None)
                .returning(JobRow.id)
            )
            ids = list(requeued.scalars())
            del failed
        return ids

    def stale_queued(
        self,
        older_than_s: float,
        limit: int = 500,
        grace_s: float = UNSENT_GRACE_S,
        *,
        queue: str | None = None,
        unsent_only: bool = False,
    ) -> list[str]:
        """QUEUED jobs never sent (created over grace_s ago), or sent long ago: maybe lost. Per
        `queue` where given, so a backlog on one queue never hides a lost job on another."""
        q = select(JobRow.id).where(self._stale(older_than_s, grace_s, unsent_only))
        if queue is not None:
            q = q.where(JobRow.queue == queue)
        with self.session() as s:
            return list(s.scalars(q.order_by(JobRow.created_at).limit(limit)))

    def stale_queues(self, older_than_s: float, grace_s: float = UNSENT_GRACE_S) -> list[str]:
        """The queues that hold a stale QUEUED job (what `stale_queued` would find)."""
        q = select(JobRow.queue).where(self._stale(older_than_s, grace_s, False)).distinct()
        with self.session() as s:
            return sorted(s.scalars(q))

    @staticmethod
    def _stale(older_than_s: float, grace_s: float, unsent_only: bool) -> Any:
        t = now()
        unsent = JobRow.sent_at.is_(None) & (JobRow.created_at < t - timedelta(seconds=grace_s))
        lost = unsent if unsent_only else or_(unsent, JobRow.sent_at < t - timedelta(seconds=older_than_s))
        return (JobRow.status == Status.QUEUED.value) & lost

    # ---- bundles ---------------------------------------------------------------------------
    def add_bundle(self, digest: str, size: int) -> None:
        with self.session() as s:
            if s.get(BundleRow, digest) is None:
                s.add(BundleRow(digest=digest, size=size, created_at=now()))

    def has_bundle(self, digest: str) -> bool:
        with self.session() as s:
            return s.get(BundleRow, digest) is not None
