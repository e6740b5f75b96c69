"""One job on a worker, in named phases: claim → prepare → run (with heartbeat) → collect → finish.

The Celery task is a thin edge over `handle`; everything here is plain functions over a
`Runtime` (settings, store, artifact store, the fork runner), so it can be tested alone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprotrain.artifacts import ArtifactStore
from reprotrain.bundles import archive_digest, bundle_path, extract_bundle
from reprotrain.errors import ArtifactTampered, LaunchError
from reprotrain.files import manifest, open_regular, write_atomic
from reprotrain.hashing import digest_file
from reprotrain.job.checkpoints import compare_checkpoints
from reprotrain.job.supervisor import execute, read_child
from reprotrain.joblog import job_event
from reprotrain.manifest import WorkerKey, build
from reprotrain.result import JobError, Result
from reprotrain.settings import Settings
from reprotrain.spec import JobSpec, parse_spec
from reprotrain.status import Status
from reprotrain.store import Store
from reprotrain.store.repo import clean_json
from reprotrain.stored_verdicts import rerun_verdict
from reprotrain.verdict import Verdict, incomparable
from reprotrain.wire import LAUNCH_HEALTH, JobFiles, job_artifact, output_artifact, side_stream
from reprotrain.worker import durable
from reprotrain.worker.across import compare_sides
from reprotrain.worker.presence import own_queues, worker_id
from reprotrain.worker.resumes import CheckpointShipper, plan_resume, settle

log = logging.getLogger("reprotrain.worker")
STREAMS = {"stdout": JobFiles.STDOUT, "stderr": JobFiles.STDERR, "events": JobFiles.EVENTS}


@dataclass
class Runtime:
    settings: Settings
    store: Store
    artifacts: ArtifactStore
    runner: Any = None
    key: WorkerKey | None = None  # signs every finished job's manifest
    owner: str = field(default_factory=worker_id)

    def get_runner(self) -> Any:
        if self.runner is None:
            from reprotrain.job.launcher import ForkRunner

            s = self.settings
            self.runner = ForkRunner(isolation=s.isolation, job_uid=s.job_uid)
            if self.runner.isolation.mode == "none":
                log.warning("jobs on this worker are not confined: %s", self.runner.isolation.note)
        return self.runner

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None
        self.store.close()


def make_runtime(settings: Settings, owner: str | None = None) -> Runtime:
    """The worker's runtime; its signing key is made on first start and registered in the store."""
    rt = Runtime(settings=settings, store=Store(settings.db_url), artifacts=ArtifactStore(settings.artifacts))
    if owner is not None:
        rt.owner = owner
    rt.key = WorkerKey.load_or_create(settings.key_file)
    rt.store.register_key(rt.key.key_id, rt.key.public_hex, f"{socket.gethostname()}:{settings.key_file}")
    return rt


TRUNCATED = b"\n[reprotrain: live log truncated here; the whole log is the artifact %s]\n"


class LogShipper:
    """Copies what a job appends to its log and event files into the store, up to a limit.

    The database holds the live view; past `limit` bytes a stream is cut with a marker (the whole
    file is stored as an artifact when the job ends), so a chatty job cannot fill the database.
    """

    def __init__(self, store: Store, job_id: str, job_dir: Path, limit: int) -> None:
        self.store, self.job_id, self.job_dir, self.limit = store, job_id, job_dir, limit
        self._lock = threading.Lock()  # the heartbeat and the final ship may overlap
        self.offsets = dict.fromkeys(STREAMS, 0)
        self.cut: set[str] = set()

    def ship(self) -> None:
        """Everything written since the last ship, in chunks, up to the cap (then the marker)."""
        with self._lock:
            self._ship_all()

    def _ship_all(self) -> None:
        for stream, name in STREAMS.items():
            path = self.job_dir / name
            if stream in self.cut or not path.exists():
                continue
            while stream not in self.cut and self._ship_chunk(stream, path, name):
                pass

    def _ship_chunk(self, stream: str, path: Path, name: str) -> bool:
        """One chunk of at most 4 MiB; False once nothing (or no whole event line) is left. The job
        can replace its logs while it runs: only a regular file is read, never through a link."""
        f = open_regular(path)
        if f is None:
            return False
        with f:
            f.seek(self.offsets[stream])
            data = f.read(min(4 << 20, self.limit - self.offsets[stream] + 1))
        if stream == "events":  # whole lines only
            data = data[: data.rindex(b"\n") + 1] if b"\n" in data else b""
        if self.offsets[stream] + len(data) > self.limit:
            data = data[: self.limit - self.offsets[stream]] + TRUNCATED % job_artifact(name).encode()
            self.cut.add(stream)
        if not data:
            return False
        self.store.append_log(self.job_id, stream, self.offsets[stream], data)
        self.offsets[stream] += len(data)
        return True


class Heartbeat(threading.Thread):
    """Renews the lease, ships logs, and turns a cancel request or a lost lease into `cancel`."""

    def __init__(
        self, rt: Runtime, job_id: str, shipper: LogShipper, checkpoints: CheckpointShipper | None = None
    ) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.rt, self.job_id, self.shipper, self.checkpoints = rt, job_id, shipper, checkpoints
        self.cancel = threading.Event()
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.stopped.wait(self.rt.settings.heartbeat_s):
            try:
                ours, cancel = self.rt.store.heartbeat(self.job_id, self.rt.owner, self.rt.settings.lease_s)
                self.shipper.ship()
                if ours and self.checkpoints is not None:
                    self.checkpoints.start()
            except Exception:
                log.exception("heartbeat for %s failed", self.job_id)
                continue
            if not ours:
                self.lost = True
            if cancel or not ours:
                self.cancel.set()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=30)


def handle(rt: Runtime, job_id: str) -> str:
    """Run one delivered job id. Returns what happened: a final status, or 'dropped'."""
    if not rt.store.claim(job_id, rt.owner, rt.settings.lease_s):
        log.info("job %s not claimable (duplicate delivery or already done); dropped", job_id)
        return "dropped"
    job = rt.store.get_job(job_id)
    job_event("claimed", job_id, attempt=job.attempts, worker=rt.owner)
    spec = parse_spec(job.spec)
    if (done := durable.finished_attempt(rt.settings.jobs, job_id)) is not None:
        log.info("job %s: an earlier attempt finished before the worker could store it; storing it", job_id)
        return store_run(rt, job, *done, resumed=True)
    job_dir = rt.settings.jobs / job_id / f"attempt-{job.attempts}"
    if job_dir.exists():
        shutil.rmtree(job_dir)
    try:
        code_dir = prepare_code(rt, spec)
    except Exception as e:  # noqa: BLE001 - a bad bundle fails the job, it does not crash the worker
        rt.store.finish(
            job_id,
            rt.owner,
            Status.FAILED,
            result=None,
            artifacts=[],
            error=JobError(type=type(e).__name__, message=str(e)),
        )
        job_event("finished", job_id, status=Status.FAILED.value, error=type(e).__name__)
        return Status.FAILED.value
    shipper = LogShipper(rt.store, job_id, job_dir, rt.settings.max_live_log_bytes)
    env = (own_queues(rt.get_runner()) or [None])[-1]  # this worker's environment (with its GPUs)
    resume, resumes = plan_resume(rt, job, job_dir, env)
    if resumes:
        job_event("resumed" if resume else "not_resumed", job_id, step=resumes[-1].from_step,
                  attempt=job.attempts, note=resumes[-1].note)  # fmt: skip
    checkpoints = CheckpointShipper(rt, job_id, job_dir, job.attempts, env)
    beat = Heartbeat(rt, job_id, shipper, checkpoints)
    beat.start()  # the lease is renewed until the result is stored, verdict and artifacts included
    try:
        job_event("started", job_id, name=job.name, mode=spec.mode, queue=job.queue)
        result = run(rt, job_id, spec, job_dir, code_dir, beat.cancel, resume)
        if resumes:
            child = read_child(job_dir)
            result = result.model_copy(update={"resumes": settle(resumes, child.resumed if child else None)})
            result.save(job_dir)
        if spec.bisect is not None and spec.bisect.side == "b":  # a bisect across environments
            result = compare_sides(rt.store, rt.artifacts, spec, result, job_dir, beat.cancel, rt.owner)
        durable.keep(result, job_dir)  # from here on, a restart stores this run instead of repeating it
        return store_run(rt, job, result, job_dir, shipper=shipper)
    finally:
        beat.stop()


def store_run(
    rt: Runtime,
    job: Any,
    result: Result,
    job_dir: Path,
    *,
    shipper: LogShipper | None = None,
    resumed: bool = False,
) -> str:
    """Artifacts, a re-run's verdict, the final logs and the commit of a finished run, retried
    while the database is unavailable; then its directory goes."""
    artifacts = collect_artifacts(rt, result, job_dir, check=resumed)
    verdict = verdict_of_rerun(rt, job.rerun_of, result, job_dir) if job.rerun_of else None
    if verdict is not None:
        job_event("verdict", job.id, verdict=verdict.verdict, original=job.rerun_of)
    if shipper is not None:
        try:  # the rest of the live logs (the whole logs are artifacts all the same)
            durable.retry_while_unavailable(shipper.ship, rt.settings.finish_retry_s, f"logs of job {job.id}")
        except Exception:
            log.warning("job %s: the last live logs could not be shipped", job.id, exc_info=True)
    manifest = signed_manifest(rt, result, artifacts, verdict, job.rerun_of)

    def commit() -> bool:
        return rt.store.finish(
            job.id, rt.owner, result.status, result=result, error=result.error, artifacts=artifacts,
            verdict=verdict, manifest=manifest, attempt=job.attempts,
        )  # fmt: skip

    if not durable.retry_while_unavailable(commit, rt.settings.finish_retry_s, f"finishing job {job.id}"):
        log.warning(
            "job %s: claimed by another attempt before this one was stored; result not stored", job.id
        )
        return "lost"
    shutil.rmtree(rt.settings.jobs / job.id, ignore_errors=True)
    duration = result.timing.get("duration_s")
    job_event(
        "finished",
        job.id,
        status=result.status.value,
        duration_s=round(duration, 3) if isinstance(duration, float) else None,
        error=result.error.type if result.error else None,
    )
    return result.status.value


def signed_manifest(
    rt: Runtime,
    result: Result,
    artifacts: list[tuple[str, str, int]],
    verdict: Verdict | None,
    rerun_of: str | None,
) -> dict[str, Any] | None:
    """The run's manifest over what is about to be stored, signed by this worker's key."""
    if rt.key is None:
        return None
    stored_verdict = clean_json(verdict.model_dump(mode="json")) if verdict else None
    body = build(
        clean_json(result.model_dump(mode="json")), artifacts, rerun_of=rerun_of, verdict=stored_verdict
    )
    return rt.key.sign(body).model_dump(mode="json")


def prepare_code(rt: Runtime, spec: JobSpec) -> Path | None:
    """The job's code directory: its bundle, extracted once per worker and checked before each use.

    The archive must hash to the spec's digest before it is extracted; the extracted tree must
    match the file digests recorded at extraction (`_bundle_trees/<digest>.json`), else it is
    extracted again: a cache changed behind the worker's back never becomes a job's code."""
    if spec.bundle is None:
        return None
    src = bundle_path(rt.settings.bundles, spec.bundle)
    cache = rt.settings.jobs / "_bundles"
    dest = cache / spec.bundle.removeprefix("sha256:")
    tree = rt.settings.jobs / "_bundle_trees" / f"{dest.name}.json"
    if dest.exists() and _tree_matches(dest, tree):
        os.utime(dest)  # recently used: the last to be pruned
        return dest
    if dest.exists():
        log.warning("extracted bundle %s changed since extraction; extracting it again", spec.bundle)
        gone = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.gone")
        dest.rename(gone)
        shutil.rmtree(gone, ignore_errors=True)
    if (actual := archive_digest(src)) != spec.bundle:
        raise ArtifactTampered(spec.bundle, actual, "bundle archive")
    tmp = dest.with_name(dest.name + f".{uuid.uuid4().hex}")
    tmp.mkdir(parents=True)
    extract_bundle(src, tmp, max_unpacked_bytes=rt.settings.max_bundle_unpacked_bytes)
    tree.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(tree, json.dumps(manifest(tmp)))
    try:
        tmp.rename(dest)
    except OSError:  # another job extracted it first
        shutil.rmtree(tmp, ignore_errors=True)
    prune_bundle_cache(cache, rt.settings.bundle_cache_bytes, keep=dest)
    return dest


def _tree_matches(dest: Path, tree: Path) -> bool:
    try:
        return bool(manifest(dest) == json.loads(tree.read_text()))
    except (OSError, ValueError):
        return False


def _du(path: Path) -> int:
    """Bytes of the regular files under path (what the unpacked-size limit counts too)."""
    return sum(st.st_size for p in path.rglob("*") if stat.S_ISREG((st := p.lstat()).st_mode))


def prune_bundle_cache(cache: Path, max_bytes: int, *, keep: Path, idle_s: float = 600) -> list[str]:
    """Remove extracted bundles, least recently used first, until the cache fits in max_bytes.

    Never `keep` (the bundle about to run) and never one used in the last idle_s seconds (another
    worker sharing this directory may be copying it). A bundle is extracted again when needed.
    """
    entries, removed, cutoff = [], [], time.time() - idle_s
    for d in cache.iterdir():
        if not d.is_dir():
            continue
        if "." in d.name:  # "<digest>.<uuid>[.gone]": being extracted or removed, or left by a crash
            if d.stat().st_mtime < cutoff:
                shutil.rmtree(d, ignore_errors=True)
            continue
        entries.append((d.stat().st_mtime, d, _du(d)))
    total = sum(size for _, _, size in entries)
    for mtime, d, size in sorted(entries):
        if total <= max_bytes:
            break
        if d == keep or mtime > cutoff:
            continue
        gone = d.with_name(f"{d.name}.{uuid.uuid4().hex}.gone")
        try:
            d.rename(gone)  # out of sight first: a new job re-extracts instead of reading half a tree
        except OSError:
            continue
        shutil.rmtree(gone, ignore_errors=True)
        total -= size
        removed.append(d.name)
    return removed


def run(
    rt: Runtime,
    job_id: str,
    spec: JobSpec,
    job_dir: Path,
    code_dir: Path | None,
    cancel: threading.Event,
    resume: Path | None = None,
) -> Result:
    try:
        result = _execute(rt, job_id, spec, job_dir, code_dir, cancel, resume)
    except LaunchError as e:  # the fork server will not start: unhealthy until a launch works
        report_launch(rt.settings, str(e))
        raise
    report_launch(rt.settings, None)
    return result


def report_launch(settings: Settings, error: str | None) -> None:
    """Record whether this worker can launch jobs, for its healthcheck (written when it changes)."""
    path = settings.jobs / LAUNCH_HEALTH
    state = {"ok": error is None, "error": error}
    try:
        if path.exists() and json.loads(path.read_text()) == state:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(state))
    except (OSError, ValueError):
        log.exception("could not record launch health")


def _execute(
    rt: Runtime,
    job_id: str,
    spec: JobSpec,
    job_dir: Path,
    code_dir: Path | None,
    cancel: threading.Event,
    resume: Path | None = None,
) -> Result:
    return execute(
        rt.get_runner(),
        spec,
        job_dir,
        job_id=job_id,
        code_dir=code_dir,
        copy_code=code_dir is not None,
        cancel=cancel,
        cancel_grace_s=rt.settings.cancel_grace_s,
        input_cache=rt.settings.data_dir / "input-digests.sqlite",
        slots=rt.settings.jobs / "_slots",
        input_roots=rt.settings.inputs_under,
        hidden=rt.settings.private_paths,
        resume=resume,
    )


def verdict_of_rerun(rt: Runtime, original_id: str, result: Result, job_dir: Path) -> Verdict:
    """A re-run's verdict, committed with its status so a finished re-run always shows one. A
    comparison that breaks must not make a job that ran run again: it says why instead."""
    try:
        return rerun_verdict(
            rt.store, rt.artifacts, original_id, result, job_dir, checkpoints=compare_checkpoints
        )
    except Exception as e:
        log.exception("verdict of %s against %s failed", result.job_id, original_id)
        return incomparable(
            original_id, result.job_id, f"the verdict could not be computed: {type(e).__name__}: {e}"
        )


def collect_artifacts(
    rt: Runtime, result: Result, job_dir: Path, check: bool = False
) -> list[tuple[str, str, int]]:
    """Output files, logs and the final state into the artifact store: (name, digest, size). With
    `check` (a run stored after a restart), each output must still hash to its recorded digest."""
    from reprotrain.files import file_entry

    out = []
    for rel, entry in (result.digests.get("files") or {}).get("files", {}).items():
        path = job_dir / JobFiles.WORK / rel
        if "symlink" in entry or not path.is_file():
            continue
        if check and digest_file(path) != entry["digest"]:
            raise ArtifactTampered(entry["digest"], digest_file(path), f"{rel} of an unstored run")
        rt.artifacts.put(path, entry["digest"])
        out.append((output_artifact(rel), entry["digest"], entry["size"]))
    streams = [side_stream(side) for side in "ab"]  # a side's recording, of a bisect across environments
    for name in (JobFiles.STDOUT, JobFiles.STDERR, JobFiles.STATE, *streams):
        path = job_dir / name
        if path.is_file():
            entry = file_entry(path)
            rt.artifacts.put(path, str(entry["digest"]))
            out.append((job_artifact(name), str(entry["digest"]), int(entry["size"])))  # type: ignore[call-overload]
    return out
