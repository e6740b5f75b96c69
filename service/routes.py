"""REST API v1 routes: parse, call one function, map the result."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match, Route

from reprotrain.bisect import offer_bisect, with_partner
from reprotrain.bundles import store_bundle
from reprotrain.errors import (
    ArtifactTampered,
    BundleTooLarge,
    NotFound,
    RequestInvalid,
    RequestTooLarge,
    SpecInvalid,
)
from reprotrain.joblog import job_event
from reprotrain.manifest import SignedManifest
from reprotrain.routing import EnvChoice, LiveWorker, rerun_queue
from reprotrain.series import MAX_POINTS, series
from reprotrain.service import jobs
from reprotrain.service.auth import Authorized, require_token
from reprotrain.service.maintenance import remove_job_dir
from reprotrain.service.schemas import (
    SPEC_EXAMPLE,
    ArtifactPublic,
    ArtifactsPublic,
    BundlePublic,
    CancelPublic,
    DeletedPublic,
    ErrorBody,
    FingerprintPublic,
    JobPublic,
    JobsPublic,
    KeyPublic,
    KeysPublic,
    RunPublic,
    RunsPublic,
    SeriesPublic,
    StoredResultPublic,
    TracePublic,
    WorkerPublic,
    WorkersPublic,
)
from reprotrain.spec import MAX_DEPTH, JobSpec, parse_spec
from reprotrain.status import Status
from reprotrain.store import Store
from reprotrain.store.repo import RunFilter, as_utc
from reprotrain.stored_verdicts import job_bisect_specs, job_verdict, stored_result
from reprotrain.verdict import Verdict

ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorBody} for c in (401, 404, 409, 413, 422)}
router = APIRouter(prefix="/v1", responses=ERRORS)
MAX_OFFSET = 2**53  # beyond any table; larger ints overflow the databases' 64-bit integers


def _created(job: JobPublic) -> Any:
    """201 with the job, serialized once (a returned model would be validated again)."""
    return Response(job.model_dump_json(), status_code=201, media_type="application/json")


def _state(request: Request) -> Any:
    return request.app.state


async def _resolve(request: Request, ref: str) -> str:
    if len(ref) == 32:  # a whole id: no query here (the route's own read finds whether it exists)
        return ref.lower()
    return await run_in_threadpool(_state(request).store.resolve_id, ref)


async def _job_id(request: Request, job_id: str, _: Authorized) -> str:
    """The job named by its id or a unique prefix of it (6+ characters), after the token check."""
    return await _resolve(request, job_id)


async def _a(request: Request, a: str, _: Authorized) -> str:
    return await _resolve(request, a)


async def _b(request: Request, b: str, _: Authorized) -> str:
    return await _resolve(request, b)


JobId = Annotated[str, Depends(_job_id)]
JobA = Annotated[str, Depends(_a)]
JobB = Annotated[str, Depends(_b)]


SPEC_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": JobSpec.model_json_schema(),
                "examples": {"mlp": {"value": SPEC_EXAMPLE}},
            }
        },
    }
}


async def json_body(request: Request) -> Any:
    """The body as JSON whatever its Content-Type says; 413 past REPROTRAIN_MAX_SPEC_BYTES, before
    it is all read (or at all, when Content-Length says so), and a clear 422 when it is not JSON."""
    limit = _state(request).settings.max_spec_bytes
    too_large = RequestTooLarge(f"request body is larger than {limit} bytes (REPROTRAIN_MAX_SPEC_BYTES)")
    declared = request.headers.get("content-length") or ""
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as e:
        raise SpecInvalid(f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise SpecInvalid(f"request body is nested deeper than {MAX_DEPTH} levels") from None


NO_BODY_BYTES = 64  # more than any empty JSON value a client library sends for "no body"


def no_body(why: str) -> Any:
    """A dependency for a POST that takes no body: one that carries something is refused (422
    `request_invalid`, field `body`) rather than ignored, since a client that sends a body meant
    something by it. No body, or an empty JSON value (`{}`, `null`, `[]`, `""`), is taken."""

    async def check(request: Request, _: Authorized) -> None:  # a request without the token: 401 first
        declared = request.headers.get("content-length")
        if (declared in (None, "0")) and "transfer-encoding" not in request.headers:
            return
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > NO_BODY_BYTES:
                break
            chunks.append(chunk)
        body = b"".join(chunks).strip()
        if size <= NO_BODY_BYTES and body in (b"", b"{}", b"null", b"[]", b'""'):
            return
        raise RequestInvalid(f"this request takes no body: {why}", field="body")

    return Depends(check)


@router.post("/jobs", status_code=201, response_model=JobPublic, tags=["jobs"], openapi_extra=SPEC_BODY)
async def submit_job(request: Request, _: Authorized) -> JobPublic:
    """Submit a job spec: stored as QUEUED, then sent to the worker queue named by `spec.queue`."""
    return await _submit(request)


async def submit_plain(request: Request) -> Response:
    """`submit_job` as requests reach it: a plain route ahead of the documented one (plain_routes),
    the token checked here, not through FastAPI's dependency solving and its per-request contexts,
    which were an eighth of a submit's CPU (0.68 → 0.58 ms a submit, PostgreSQL)."""
    await require_token(request)
    return await _submit(request)


class PlainRoute(Route):
    """A Starlette route that puts itself in the scope as FastAPI's own routes do: the request
    metrics name a request by its route's path template."""

    def matches(self, scope: Any) -> tuple[Match, Any]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


def plain_routes() -> list[Route]:
    """Routes the app serves ahead of the router's: same path, same answers, less machinery. The
    OpenAPI schema still comes from the documented route of each."""
    return [PlainRoute("/v1/jobs", submit_plain, methods=["POST"], name="submit_job")]


async def _submit(request: Request) -> Any:
    st = _state(request)
    body = await json_body(request)
    if isinstance(body, dict) and body.get("bundle"):  # only a bundle check reads the database
        spec = await run_in_threadpool(jobs.validate, st.store, body, st.settings.inputs_under)
    else:
        spec = jobs.validate(st.store, body, st.settings.inputs_under)
    created = JobPublic.from_row(await st.writer.create(spec))
    st.metrics.submitted.labels(spec.queue, "submit").inc()
    return _created(created)


def job_filter(
    request: Request,
    status: Annotated[list[str] | None, Query(description="filter; repeat or comma-separate")] = None,
    name: Annotated[str | None, Query(description="exact name", max_length=200)] = None,
    search: Annotated[
        str | None, Query(description="part of the name, or the start of the id", max_length=200)
    ] = None,
    tag: Annotated[str | None, Query(description="jobs whose spec has this tag", max_length=64)] = None,
    verdict: Annotated[
        list[str] | None, Query(description="a re-run's verdict kind, or none; repeat or comma-separate")
    ] = None,
    rerun_of: Annotated[str | None, Query(max_length=32)] = None,
    project: Annotated[str | None, Query(description="jobs of this project", max_length=100)] = None,
) -> RunFilter:
    """The filters of the job list and the runs table; `param.<path>=<value>` (repeatable) matches
    a spec param by value (`param.lr=0.1`, `param.optim.name=adam`)."""
    return RunFilter(
        project=project or None,
        params=jobs.parse_param_filters(request.query_params.multi_items()),
        status=jobs.parse_status_filter(status),
        name=name or None,
        search=search or None,
        tag=tag or None,
        verdict=jobs.parse_verdict_filter(verdict),
        rerun_of=rerun_of or None,
    )


Filtered = Annotated[RunFilter, Depends(job_filter)]


@router.get("/jobs", response_model=JobsPublic, tags=["jobs"])
def list_jobs(
    request: Request,
    _: Authorized,
    where: Filtered,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> JobsPublic:
    """Jobs, newest first, filtered by status, name, tag, verdict or original job, one page at a time."""
    rows, total = _state(request).store.list_jobs(where, limit=limit, offset=offset)
    return JobsPublic(data=[JobPublic.from_row(r) for r in rows], count=total, limit=limit, offset=offset)


@router.get("/runs", response_model=RunsPublic, tags=["jobs"])
def list_runs(
    request: Request,
    _: Authorized,
    where: Filtered,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> RunsPublic:
    """The runs table: a light row per job (no spec, result or trace), newest first, with the same
    filters as GET /v1/jobs. What the web UI lists."""
    store = _state(request).store
    rows, total = store.list_runs(where, limit=limit, offset=offset)
    facts = store.run_facts([r.id for r in rows])
    at = datetime.now(UTC)
    data = [RunPublic.from_row(r, facts.get(r.id, {}), at) for r in rows]
    return RunsPublic(data=data, count=total, limit=limit, offset=offset)


@router.get("/jobs/{job_id}", response_model=JobPublic, tags=["jobs"])
def get_job(request: Request, job_id: JobId, _: Authorized) -> JobPublic:
    """One job: status, metrics, digests, and for a re-run its verdict."""
    return JobPublic.from_row(_state(request).store.get_job(job_id, light=True))


RERUN_NO_BODY = (
    "a re-run runs the original job's spec, bundle and seed unchanged; "
    "to change any of them, submit a new job (POST /v1/jobs)"
)


@router.post(
    "/jobs/{job_id}/rerun",
    status_code=201,
    response_model=JobPublic,
    tags=["jobs"],
    dependencies=[no_body(RERUN_NO_BODY)],
)
async def rerun_job(
    request: Request, job_id: JobId, _: Authorized, env: Annotated[EnvChoice, Query()] = "same"
) -> JobPublic:
    """Re-run a job with the same spec, bundle and seed; its verdict appears when it ends. `env=same`
    (default): only on a worker of the environment the original ran in (its `env.<digest>` queue;
    409 `no_matching_worker`, naming each live environment and how it differs, when none is alive);
    `env=any`: on the spec's queue, wherever that is (the verdict says when the environments differ)."""
    st = _state(request)
    original = await run_in_threadpool(lambda: st.store.get_job(job_id, light=True))
    fingerprint = await run_in_threadpool(st.store.fingerprint, original.id)
    spec = parse_spec(original.spec)
    live = await run_in_threadpool(_live_workers, st.store)
    queue = rerun_queue(fingerprint, spec.queue, live, env)
    created = JobPublic.from_row(await st.writer.create(spec, rerun_of=original.id, queue=queue))
    st.metrics.submitted.labels(created.queue, "rerun").inc()
    return _created(created)


@router.delete("/jobs/{job_id}", response_model=DeletedPublic, tags=["jobs"])
def delete_job(request: Request, job_id: JobId, _: Authorized) -> DeletedPublic:
    """Delete an ended job: its row, logs, working directory and every stored file no other job
    holds. 409 for a job still queued or running (cancel it first) or the original of a re-run."""
    st = _state(request)
    released = st.store.delete_job(job_id)
    files, size = st.artifacts.remove(released, st.settings.artifact_grace_s)
    remove_job_dir(st.settings, job_id)
    st.columns.drop(job_id)
    job_event("deleted", job_id, artifacts_removed=files, bytes_freed=size)
    return DeletedPublic(
        id=job_id, artifacts_removed=files, bytes_freed=size, artifacts_kept=len(released) - files
    )


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=202,
    response_model=CancelPublic,
    tags=["jobs"],
    dependencies=[no_body("cancel has no options")],
)
def cancel_job(request: Request, job_id: JobId, _: Authorized) -> CancelPublic:
    """Cancel: a queued job at once, a running one by its worker (SIGTERM, then SIGKILL)."""
    return CancelPublic(id=job_id, status=_state(request).store.request_cancel(job_id))


@router.get("/jobs/{job_id}/logs", tags=["data"], response_class=StreamingResponse)
async def job_logs(
    request: Request,
    job_id: JobId,
    _: Authorized,
    stream: Literal["stdout", "stderr"] = "stdout",
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    follow: bool = False,
) -> StreamingResponse:
    """The job's stdout or stderr as text; with follow, streamed until the job ends."""
    store = _state(request).store
    await run_in_threadpool(lambda: store.get_job(job_id, light=True))

    async def chunks() -> AsyncIterator[bytes]:
        pos = offset
        while True:
            row = await run_in_threadpool(lambda: store.get_job(job_id, light=True))
            data = await run_in_threadpool(store.read_log, job_id, stream, pos)
            if data:
                pos += len(data)
                yield data
            if not follow or (Status(row.status).is_final and not data):
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.25)

    return StreamingResponse(chunks(), media_type="text/plain; charset=utf-8")


@router.get("/jobs/{job_id}/trace", response_model=TracePublic, tags=["data"])
def job_trace(
    request: Request,
    job_id: JobId,
    _: Authorized,
    since: Annotated[int, Query(ge=0, description="skip this many entries")] = 0,
) -> TracePublic:
    """Per-step metrics (exact values), live while the job runs."""
    st = _state(request)
    row = st.store.get_job(job_id, light=True)
    trace, total = jobs.live_progress(st.store, row)
    return TracePublic(status=row.status, data=trace[since:], count=len(trace), total=total)


@router.get("/jobs/{job_id}/series", response_model=SeriesPublic, tags=["data"])
def job_series(
    request: Request,
    job_id: JobId,
    _: Authorized,
    points: Annotated[int, Query(ge=8, le=MAX_POINTS, description="about how many steps to return")] = 2000,
    start: Annotated[int | None, Query(ge=-MAX_OFFSET, le=MAX_OFFSET, description="first step")] = None,
    end: Annotated[int | None, Query(ge=-MAX_OFFSET, le=MAX_OFFSET, description="last step")] = None,
    keep: Annotated[list[int] | None, Query(description="steps always returned (a divergence)")] = None,
) -> SeriesPublic:
    """The trace as chart columns, downsampled past `points` entries (first, last, min and max of
    each metric per bucket, and every `keep` step); exact values for a range that fits."""
    st = _state(request)
    row = st.store.get_job(job_id, light=True)
    if Status(row.status).is_final:  # a finished trace never changes: parsed once, kept
        trace: Any = st.columns.get(job_id, lambda: st.store.trace(job_id))
    else:
        trace = jobs.live_trace(st.store, row)
    found = series(trace, points=points, start=start, end=end, keep=keep or ())
    return SeriesPublic(status=row.status, **found)


@router.get("/jobs/{job_id}/fingerprint", response_model=FingerprintPublic, tags=["data"])
def job_fingerprint(request: Request, job_id: JobId, _: Authorized) -> FingerprintPublic:
    """The environment fingerprint the job ran in, with its env_digest and determinism record."""
    row = _state(request).store.get_job(job_id)
    if row.result is None:
        raise NotFound(f"job {job_id} has no result yet (status {row.status})", field="job_id")
    r = stored_result(job_id, row.result)
    return FingerprintPublic(
        env_digest=r.env_digest,
        fingerprint=r.fingerprint,
        determinism=r.determinism,
        inputs=r.inputs,
        nondeterministic_ops=[op.model_dump(mode="json") for op in r.nondeterministic_ops],
    )


@router.get("/jobs/{job_id}/artifacts", response_model=ArtifactsPublic, tags=["data"])
def job_artifacts(request: Request, job_id: JobId, _: Authorized) -> ArtifactsPublic:
    """Files the job produced (outputs, logs, final state), by name."""
    st = _state(request)
    st.store.get_job(job_id, light=True)
    rows = st.store.artifacts(job_id)
    return ArtifactsPublic(
        data=[ArtifactPublic(name=a.name, digest=a.digest, size=a.size) for a in rows], count=len(rows)
    )


@router.get("/jobs/{job_id}/artifacts/{name:path}", tags=["data"], response_class=FileResponse)
def job_artifact(request: Request, job_id: JobId, name: str, _: Authorized) -> FileResponse:
    """Download one artifact by name."""
    st = _state(request)
    st.store.get_job(job_id, light=True)
    match = next((a for a in st.store.artifacts(job_id) if a.name == name), None)
    if match is None:
        raise NotFound(f"job {job_id} has no artifact named {name!r}", field="name")
    try:
        path = st.artifacts.verified(match.digest, name)
    except ArtifactTampered as e:
        st.store.mark_tampered(e)
        raise
    return FileResponse(
        path,
        filename=name.rsplit("/", 1)[-1],
        media_type="application/octet-stream",
    )


@router.get("/jobs/{job_id}/manifest", response_model=SignedManifest, tags=["data"])
def job_manifest(request: Request, job_id: JobId, _: Authorized) -> SignedManifest:
    """The finished job's run manifest, signed by its worker (`reprotrain verify` checks it)."""
    row = _state(request).store.get_job(job_id)
    if row.manifest is None:
        raise NotFound(f"job {job_id} has no signed manifest (status {row.status})", field="job_id")
    return SignedManifest.model_validate(row.manifest)


@router.get("/jobs/{job_id}/result", response_model=StoredResultPublic, tags=["data"])
def job_result(request: Request, job_id: JobId, _: Authorized) -> StoredResultPublic:
    """The stored result and verdict exactly as stored: what the manifest's digests are taken of."""
    row = _state(request).store.get_job(job_id)
    if row.result is None:
        raise NotFound(f"job {job_id} has no result yet (status {row.status})", field="job_id")
    return StoredResultPublic(result=row.result, verdict=row.verdict)


PRESENCE_TTL_S = 30.0  # three missed presence beats (a worker says it is alive every 10 s)


@router.get("/workers", response_model=WorkersPublic, tags=["data"])
def list_workers(request: Request, _: Authorized) -> WorkersPublic:
    """Every worker that said it was alive, newest first; `alive`: heard from within 30 s."""
    rows = _state(request).store.workers()
    at = datetime.now(UTC)
    data = [
        WorkerPublic(
            id=w.id,
            host=w.host,
            queues=w.queues,
            version=w.version,
            isolation=w.isolation,
            static_digest=w.static_digest,
            gpus=[g.get("name", "?") for g in ((w.facts or {}).get("cuda") or {}).get("gpus", [])],
            started_at=as_utc(w.started_at),
            last_seen_at=as_utc(w.last_seen_at),
            alive=_alive(w, at),
        )
        for w in rows
    ]
    return WorkersPublic(data=data, count=len(data), alive=sum(w.alive for w in data))


@router.get("/keys", response_model=KeysPublic, tags=["data"])
def worker_keys(request: Request, _: Authorized) -> KeysPublic:
    """Every worker's public signing key, by key id."""
    rows = _state(request).store.keys()
    data = [
        KeyPublic(key_id=k.key_id, public_key=k.public_key, owner=k.owner, created_at=k.created_at)
        for k in rows
    ]
    return KeysPublic(data=data, count=len(data))


@router.get("/jobs/{a}/compare/{b}", response_model=Verdict, tags=["jobs"])
def compare_jobs(request: Request, a: JobA, b: JobB, _: Authorized) -> Verdict:
    """The verdict of job b against job a: identical, metrics_identical, diverged or incomparable."""
    st = _state(request)
    return offer_bisect(job_verdict(st.store, st.artifacts, a, b), st.store.get_job(a, light=True).spec)


@router.post(
    "/jobs/{a}/bisect/{b}",
    status_code=201,
    response_model=JobPublic,
    tags=["jobs"],
    dependencies=[no_body("a bisect takes its two jobs from the path and nothing else")],
)
async def bisect_jobs(request: Request, a: JobA, b: JobB, _: Authorized) -> JobPublic:
    """Find the first operation where job b parted from job a. When both ran in one environment: a
    job of its own that runs a's spec (and b's, if it differs) as two copies on one worker,
    recorded op by op up to the first differing step. When their environments differ: one job per
    side, each on a worker of that side's environment (its `env.<digest>` queue), and the returned
    job, side b's, compares the two recordings. When it ends, its `bisect` names the op, its module,
    source line and shapes, and how much each output differs. 409 when the runs do not part at a
    step or ran different code; 409 `no_matching_worker` when no live worker has a side's environment."""
    st = _state(request)
    live = await run_in_threadpool(_live_queues, st.store)
    specs = await run_in_threadpool(job_bisect_specs, st.store, st.artifacts, a, b, live)
    if len(specs) == 2:
        side_a = await st.writer.create(specs[0])
        st.metrics.submitted.labels(side_a.queue, "bisect").inc()
        specs = [with_partner(specs[1], side_a.id)]
    created = JobPublic.from_row(await st.writer.create(specs[0]))
    st.metrics.submitted.labels(created.queue, "bisect").inc()
    return _created(created)


def _alive(w: Any, at: datetime) -> bool:
    """Heard from within PRESENCE_TTL_S of `at`."""
    return (at - as_utc(w.last_seen_at)).total_seconds() < PRESENCE_TTL_S


def _live_workers(store: Store) -> list[LiveWorker]:
    """The workers heard from within PRESENCE_TTL_S, with the environments they offer."""
    at = datetime.now(UTC)
    return [
        LiveWorker(id=w.id, queues=w.queues or [], static=(w.facts or {}).get("static"),
                   cuda=(w.facts or {}).get("cuda"))
        for w in store.workers() if _alive(w, at)
    ]  # fmt: skip


def _live_queues(store: Store) -> set[str]:
    """The queues the live workers consume."""
    return {q for w in _live_workers(store) for q in w.queues}


@router.post(
    "/bundles",
    status_code=201,
    response_model=BundlePublic,
    tags=["bundles"],
    openapi_extra={
        "requestBody": {
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
            "required": True,
        }
    },
)
async def upload_bundle(request: Request, _: Authorized) -> BundlePublic:
    """Upload code as a tar.gz body; stored by sha256. Unsafe or oversized archives are refused."""
    st = _state(request)
    limit = st.settings.max_bundle_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BundleTooLarge(f"bundle is {declared} bytes; the limit is {limit}")
    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BundleTooLarge(f"bundle exceeds the limit of {limit} bytes")
            spool.write(chunk)
        spool.seek(0)
        digest, size = await run_in_threadpool(
            store_bundle,
            iter(lambda: spool.read(1 << 20), b""),
            st.settings.bundles,
            max_bytes=limit,
            max_unpacked_bytes=st.settings.max_bundle_unpacked_bytes,
        )
    await run_in_threadpool(st.store.add_bundle, digest, size)
    return BundlePublic(digest=digest, size=size)
