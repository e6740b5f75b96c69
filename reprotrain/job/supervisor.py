"""Running one job end to end through a runner: prepare → launch → supervise → assemble.

Used by the CLI's `reprotrain run` and by the Celery task alike, so a local run and a service
run are the same code path from the spec to the stored result.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reprotrain import files
from reprotrain.errors import InputError, LaunchError
from reprotrain.fingerprint import StaticFacts, env_digest
from reprotrain.inputs import Budget, digest_inputs
from reprotrain.isolation import Isolation
from reprotrain.job.confine import job_plan
from reprotrain.job.launcher import ForkServerGone, JobHandle
from reprotrain.job.request import LaunchRequest
from reprotrain.job.slots import default_root, move_out, slot
from reprotrain.logs import last_raised, read_tail, tail
from reprotrain.report import read_events
from reprotrain.result import ChildRecord, CodeRecord, DeterminismRecord, JobError, Result
from reprotrain.spec import JobSpec
from reprotrain.status import Status
from reprotrain.wire import JobFiles

POLL_S = 0.2  # how often cancel and timeout are checked; exits wake at once
CANCEL_GRACE_S = 10.0
UNCONFINED = Isolation(mode="none", network="host", note="this runner does not confine jobs")
COPY_IGNORE = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".venv", "runs")


class Runner:
    isolation: Isolation  # the strongest confinement this runner's jobs get

    def launch(self, req: LaunchRequest) -> JobHandle: ...


def prepare_job_dir(job_dir: Path, work: Path, code_dir: Path | None, copy_code: bool) -> dict[str, str]:
    """Fresh job directory and workspace; with copy_code, the code is copied into the workspace."""
    job_dir.mkdir(parents=True, exist_ok=True)
    if any(job_dir.iterdir()):
        raise LaunchError(f"job directory is not empty: {job_dir}")
    if work.exists():
        shutil.rmtree(work)
    if copy_code and code_dir is not None:
        inside = job_dir.resolve()

        def ignore(src: str, names: list[str]) -> set[str]:  # never copy the job into itself
            skip = set(COPY_IGNORE(src, names))
            return skip | {n for n in names if Path(src, n).resolve() == inside}

        shutil.copytree(code_dir, work, ignore=ignore, symlinks=True)
    work.mkdir(exist_ok=True)
    return files.manifest(work)


def execute(
    runner: Runner,
    spec: JobSpec,
    job_dir: Path,
    *,
    job_id: str | None = None,
    code_dir: Path | None = None,
    copy_code: bool | None = None,
    input_cache: Path | None = None,
    cancel: threading.Event | None = None,
    cancel_grace_s: float = CANCEL_GRACE_S,
    on_start: Any = None,
    slots: Path | None = None,
    input_roots: list[Path] | None = None,
    hidden: list[Path] | None = None,
    resume: Path | None = None,
) -> Result:
    """Run `spec` once in a fresh job process and store its result under `job_dir`; with `resume`
    (a checkpoint directory), going on from that checkpoint (reprotrain/job/resume.py).

    The job works in a canonical slot under `slots` (default: the local runs' one), so every job
    of a worker sees the same working path; its directory then moves to `job_dir/work`. Where the
    runner confines jobs, `hidden` (the worker's data) is out of the job's sight."""
    with slot(slots or default_root()) as work:
        try:
            return _execute(runner, spec, job_dir, work, job_id, code_dir, copy_code, input_cache,
                            cancel, cancel_grace_s, on_start, input_roots, hidden or [], resume)  # fmt: skip
        finally:
            if work.exists() and not (job_dir / JobFiles.WORK).exists():
                move_out(work, job_dir / JobFiles.WORK)


def _execute(
    runner: Runner,
    spec: JobSpec,
    job_dir: Path,
    work: Path,
    job_id: str | None,
    code_dir: Path | None,
    copy_code: bool | None,
    input_cache: Path | None,
    cancel: threading.Event | None,
    cancel_grace_s: float,
    on_start: Any,
    input_roots: list[Path] | None,
    hidden: list[Path],
    resume: Path | None = None,
) -> Result:
    job_id = job_id or uuid.uuid4().hex
    started = datetime.now(UTC)
    copy = spec.mode == "script" if copy_code is None else copy_code
    isolation = getattr(runner, "isolation", UNCONFINED)
    if not copy and code_dir is not None and isolation.uid is not None and not _open_to_all(code_dir):
        copy = True  # the job's uid could not read it where it is (a 0700 directory): a copy it owns
    manifest = prepare_job_dir(job_dir, work, code_dir, copy)
    base = {"job_id": job_id, "name": spec.name, "spec": spec.canonical(), "spec_digest": spec.digest}
    if copy and code_dir is not None:
        base["code"] = CodeRecord.of(manifest)
    try:
        budget = Budget(time.monotonic() + spec.timeout_s, cancel)
        inputs = digest_inputs(spec.inputs, input_cache, roots=input_roots, budget=budget)
    except InputError as e:
        result = Result(**base, status=Status.FAILED, error=JobError(type="InputError", message=str(e)))
        result.save(job_dir)
        return result
    shown = None if copy or code_dir is None else str(code_dir.resolve())
    paths = {n: str(Path(i["path"]).resolve()) for n, i in inputs.items()}
    plan = job_plan(
        isolation,
        spec.network,
        writable=[str(job_dir.resolve()), str(work.resolve())],
        readable=[*paths.values(), *([shown] if shown else [])],
        hidden=[str(p.resolve()) for p in [*hidden, *(input_roots or [])]],
    )
    base["isolation"] = plan.record()
    if resume is not None and resume.resolve() != (job_dir / JobFiles.RESUME).resolve():
        shutil.copytree(resume, job_dir / JobFiles.RESUME, dirs_exist_ok=True)
    req = LaunchRequest(
        job_id=job_id,
        spec=spec,
        job_dir=str(job_dir.resolve()),
        work_dir=str(work),
        code_dir=shown,
        inputs=paths,
        confine=plan,
        resume=str((job_dir / JobFiles.RESUME).resolve()) if resume is not None else None,
    )
    (job_dir / JobFiles.REQUEST).write_text(req.model_dump_json())
    t0 = time.monotonic()
    handle = runner.launch(req)
    if on_start is not None:
        on_start(handle)
    try:
        status, exit_code = supervise(handle, spec.timeout_s, cancel, cancel_grace_s)
    finally:
        handle.signal(signal.SIGKILL)  # whatever the job left running goes with it
        handle.close()
    take_back(job_dir, work, plan.uid is not None)
    result = assemble(
        base, job_dir, status, exit_code, inputs, manifest, timing(read_child(job_dir), started, t0),
        trusted=getattr(runner, "static", None),
    )  # fmt: skip
    result.save(job_dir)
    return result


def _open_to_all(path: Path) -> bool:
    """Whether any uid may list and enter the directory (o+rx)."""
    return path.stat().st_mode & 0o005 == 0o005


def take_back(job_dir: Path, work: Path, reown: bool = False) -> None:
    """The job's directories, made safe for the worker to read once no process of the job is left:
    nothing but regular files and directories at the job's own files (a link there would have the
    worker read, copy or write through it: a key, a database, a file anywhere), no FIFO, socket or
    device anywhere (opening one blocks or worse), and the working directory moved in (over
    whatever the job put at its place)."""
    files.sanitize(job_dir, keep_links=False)
    files.sanitize(work, keep_links=True)
    dest = job_dir / JobFiles.WORK
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif os.path.lexists(dest):
        dest.unlink()
    move_out(work, dest)
    if reown:  # the job ran as another uid: its files are the worker's again
        files.chown_tree(job_dir, os.getuid(), os.getgid())


def supervise(
    handle: JobHandle, timeout_s: float, cancel: threading.Event | None, grace_s: float = CANCEL_GRACE_S
) -> tuple[Status, int | None]:
    """Wait for the job; on timeout kill its group, on cancel SIGTERM then SIGKILL."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            code = handle.wait(min(POLL_S, max(0.0, deadline - time.monotonic())))
        except ForkServerGone:
            return Status.FAILED, SERVER_GONE
        if code is not None:
            return (Status.SUCCEEDED if code == 0 else Status.FAILED), code
        if cancel is not None and cancel.is_set():
            handle.signal(signal.SIGTERM)
            code = handle.wait(grace_s)  # then the caller's SIGKILL takes the whole group
            return Status.CANCELED, code
        if time.monotonic() >= deadline:
            handle.signal(signal.SIGKILL)
            return Status.TIMED_OUT, handle.wait(10)


def assemble(
    base: dict[str, Any],
    job_dir: Path,
    status: Status,
    exit_code: int | None,
    inputs: dict[str, Any],
    manifest: dict[str, str],
    timing: dict[str, Any],
    trusted: StaticFacts | None = None,
) -> Result:
    """The stored result, from what the job process wrote and what is on disk now. `trusted`: the
    fork server's own reading of the static environment, which replaces the job's (user code runs
    in the job process and could rewrite its report; it cannot reach the fork server)."""
    child = read_child(job_dir)
    if status is Status.SUCCEEDED and (child is None or child.status is not Status.SUCCEEDED):
        status = Status.FAILED  # exited 0 without finishing its record: not a success
    events = read_events(job_dir / JobFiles.EVENTS)
    trace = [e for e in events if e["kind"] == "metric"]
    digests = dict(child.digests) if child else {}
    digests["files"] = files.tree_digests(job_dir / JobFiles.WORK, skip=manifest)
    for stream, name in (("stdout", JobFiles.STDOUT), ("stderr", JobFiles.STDERR)):
        log = job_dir / name
        digests[stream] = files.file_entry(log)["digest"] if log.exists() else None
    metrics = dict(child.metrics) if child else {}
    if not metrics and trace and base["spec"].get("command"):
        for e in trace:  # script mode: the last value of each reported metric
            metrics.update(e["metrics"])
    fingerprint = child.fingerprint if child else None
    if fingerprint is not None and trusted is not None:
        host = fingerprint.host.model_copy(update={"hostname": socket.gethostname()})
        fingerprint = fingerprint.model_copy(update={**dict(trusted), "host": host})
    return Result(
        **base,
        status=status,
        error=offline_hint(_error(status, child, exit_code, job_dir), base.get("isolation")),
        metrics=metrics,
        trace=trace,
        param_digests=[e for e in events if e["kind"] == "params"],
        digests=digests,
        determinism=_with_process_seeds(child.determinism if child else None, events),
        nondeterministic_ops=_nondet(events),
        fingerprint=fingerprint,
        env_digest=env_digest(fingerprint) if fingerprint else None,
        inputs=inputs,
        timing=timing,
        artifacts={"state": child.state_file} if child and child.state_file else {},
        bisect=child.bisect if child else None,
        preflight=child.preflight if child else None,
    )


def _with_process_seeds(record: DeterminismRecord | None, events: list[dict[str, Any]]) -> Any:
    """The job's determinism record with the torch seeds its other Python processes reported
    (`torch_seed` events, job/boot.py), in the order they ended."""
    seeds = [e["seed"] for e in events if e.get("kind") == "torch_seed" and type(e.get("seed")) is int]
    if record is None or not seeds:
        return record
    return record.model_copy(update={"process_seeds": seeds})


def _error(
    status: Status, child: ChildRecord | None, exit_code: int | None, job_dir: Path
) -> JobError | None:
    if status is Status.TIMED_OUT:
        return JobError(type="Timeout", message="job ran past timeout_s; its process group was killed")
    if status is Status.CANCELED:
        return JobError(type="Canceled", message="job was canceled")
    if status is Status.FAILED:
        error = child.error if child is not None and child.error is not None else None
        kind = "ForkServerDied" if exit_code == SERVER_GONE else "ProcessExit"
        return explain(error or JobError(type=kind, message=_exit_message(exit_code, job_dir)), job_dir)
    return None


# what a job sees of the network being off: resolver and socket errors, as Python and requests word them
_OFFLINE = re.compile(
    r"Temporary failure in name resolution|Name or service not known|Network is unreachable"
    r"|No address associated with hostname|nodename nor servname|gaierror|Failed to resolve"
    r"|Max retries exceeded with url|Failed to establish a new connection"
)


def offline_hint(error: JobError | None, isolation: Isolation | None) -> JobError | None:
    """A job without network that failed reaching it gets told why, and what to change."""
    if error is None or isolation is None or isolation.network != "none":
        return error
    said = " ".join(x or "" for x in (error.type, error.message, error.traceback, error.stderr_tail))
    if not _OFFLINE.search(said):
        return error
    hint = 'the job ran without network (`network: none`, the default); set `network: "host"` to reach it'
    return error.model_copy(update={"detail": f"{error.detail}; {hint}" if error.detail else hint})


# how a job process reports a command or process that failed without saying why
_OPAQUE = ("JobFailed", "ProcessExit", "SystemExit")


def explain(error: JobError, job_dir: Path) -> JobError:
    """The error with what stderr says: the exception of the last Python traceback there (a script's
    own, where the job process saw only an exit status) and the last lines."""
    text = read_tail(job_dir / JobFiles.STDERR)
    raised = last_raised(text)
    fields: dict[str, Any] = {"stderr_tail": tail(text)}
    if raised is not None:
        fields["traceback"] = raised.traceback
        if error.type in _OPAQUE:
            fields |= {"type": raised.type, "message": raised.message, "detail": error.message}
    return error.model_copy(update=fields)


def read_child(job_dir: Path) -> ChildRecord | None:
    """The job process's record; None when it died before writing one (or wrote garbage)."""
    try:
        return ChildRecord.model_validate_json((job_dir / JobFiles.CHILD).read_bytes())
    except (OSError, ValueError):
        return None


def timing(child: ChildRecord | None, started: datetime, launched: float) -> dict[str, Any]:
    """Wall times of a run; start latency is launch request → user code running (monotonic)."""
    out: dict[str, Any] = {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_s": time.monotonic() - launched,
    }
    t = child.timing if child else None
    if t is not None and t.user_start is not None:
        out["start_latency_s"] = t.user_start - launched
        if t.user_end is not None:
            out["user_s"] = t.user_end - t.user_start
    return out


def _nondet(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each op that warned, once, with how often and its first message."""
    ops: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["kind"] == "nondeterministic":
            entry = ops.setdefault(e["op"], {"op": e["op"], "count": 0, "message": e["message"]})
            entry["count"] += 1
    return list(ops.values())


SERVER_GONE = -1000  # no exit status: the fork server that would report it died


def _exit_message(code: int | None, job_dir: Path) -> str:
    if code == SERVER_GONE:
        return "the fork server died while this job ran, and the job with it (did the job kill its parent?)"
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
    tail = ""
    try:
        lines = (job_dir / JobFiles.STDERR).read_text(errors="replace").strip().splitlines()
        tail = f": {lines[-1]}" if lines else ""
    except OSError:
        pass
    return f"job process {how}{tail}"
