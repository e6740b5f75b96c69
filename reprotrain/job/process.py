"""The job process: applies the policy, runs the user's code, writes what it measured.

Runs in a child forked from the fork server (or, for comparison, in a fresh interpreter via
``python -m reprotrain.job.process REQUEST``). Phases: prepare → apply → run → collect.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reprotrain.errors import JobFailed
from reprotrain.files import write_atomic
from reprotrain.fingerprint import EffectiveKnobs, EnvKnobs
from reprotrain.job import confine
from reprotrain.job.request import LaunchRequest
from reprotrain.policy import Knobs, resolve
from reprotrain.procs import become_subreaper
from reprotrain.report import EventWriter, encode_metrics
from reprotrain.result import ChildRecord, DeterminismRecord, JobError
from reprotrain.spec import PYTHON_NAMES, JobSpec, inline_python
from reprotrain.status import Status
from reprotrain.wire import JobEnv, JobFiles, side_stream


def prepare(req: LaunchRequest, spec: JobSpec, knobs: Knobs) -> None:
    """Stdio to the job's log files, environment for every process of the job, fresh cwd."""
    d = req.dir
    for fd, name in ((1, JobFiles.STDOUT), (2, JobFiles.STDERR)):
        out = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(out, fd)
        os.close(out)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.dont_write_bytecode = True
    inherited = {k: v for k, v in os.environ.items() if passes(k)}
    os.environ.clear()  # the worker's settings and credentials stay with the worker
    os.environ.update(inherited | dict(spec.env or {}) | _job_env(req, spec, knobs, inherited))
    req.workspace.mkdir(parents=True, exist_ok=True)
    os.chdir(req.workspace)


# What a job's environment keeps of the worker's (README, "A job's environment"): where programs,
# libraries and the interpreter's packages are, locale, time zone, home, temp and GPU visibility.
# Nothing else, no REPROTRAIN_* setting and no credential, unless the spec's `env:` sets it.
PASSED = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "PYTHONPATH"}
    | {"LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"}
    | {"NVIDIA_DRIVER_CAPABILITIES"}
)


def passes(name: str) -> bool:
    return name in PASSED or name.startswith("LC_")


def _job_env(req: LaunchRequest, spec: JobSpec, knobs: Knobs, inherited: dict[str, str]) -> dict[str, str]:
    """What reprotrain sets, over the inherited and the spec's variables: the policy's knobs win."""
    boot = _write_boot(req.dir / JobFiles.BOOT)
    # reprotrain itself is importable from the interpreter's own site-packages, never from a path
    # entry of ours: a job's own `worker`, `service` or `examples` must be the job's
    paths = [boot, *([req.code_dir] if req.code_dir else []), str(req.workspace)]
    extra = [p for p in ((spec.env or {}).get("PYTHONPATH"), inherited.get("PYTHONPATH")) if p]
    env = {
        **knobs.env(),
        JobEnv.EVENTS: str(req.dir / JobFiles.EVENTS),
        JobEnv.KNOBS: json.dumps({"knobs": knobs.model_dump(), "seed": spec.seed}),
        "PYTHONPATH": os.pathsep.join(paths + extra),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PATH": os.pathsep.join(
            [str(Path(sys.executable).parent), (spec.env or {}).get("PATH") or inherited.get("PATH", "")]
        ),
        JobEnv.OUTPUT_DIR: str(req.workspace / "outputs"),
        JobEnv.SEED: "" if spec.seed is None else str(spec.seed),
        JobEnv.CHECKPOINT_DIR: str(req.dir / JobFiles.CHECKPOINTS),
    }
    if req.resume:
        env[JobEnv.RESUME_FROM] = req.resume
    for name, path in req.inputs.items():
        env[JobEnv.input(name)] = path
    if req.confine.mode != "none":
        env["TMPDIR"] = "/tmp"  # its own, empty; the worker's temp is not the job's
    return env


def _write_boot(boot: Path) -> str:
    """A sitecustomize that applies the policy at the start of every Python process of the job."""
    boot.mkdir(parents=True, exist_ok=True)
    (boot / "sitecustomize.py").write_text(
        "import reprotrain.job.boot as _rt_boot\n_rt_boot.boot(__file__)\n"
    )
    return str(boot)


def apply(spec: JobSpec, knobs: Knobs, events: EventWriter) -> Any:
    """Apply every knob in this process; returns the torch device the job runs on."""
    import torch

    from reprotrain.job.apply import apply_all, record_nondeterministic_warnings

    apply_all(knobs, spec.seed)
    if knobs.deterministic_algorithms == "warn":
        record_nondeterministic_warnings(lambda op, msg: events.write("nondeterministic", op=op, message=msg))
    want = spec.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    elif want == "cuda" and not torch.cuda.is_available():
        raise JobFailed("device 'cuda' was requested but this worker has no usable CUDA device")
    return torch.device(want)


def run_function(
    req: LaunchRequest,
    spec: JobSpec,
    knobs: Knobs,
    device: Any,
    events: EventWriter,
    child: dict[str, Any],
    *,
    ctx_cls: type | None = None,
    workspace: Path | None = None,
    around: Any = None,
) -> Any:
    from reprotrain.job.context import Context

    for p in (req.code_dir, str(req.workspace)):
        if p and p not in sys.path:
            sys.path.insert(0, p)
    module_name, func_name = (spec.entrypoint or "").split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as e:
        raise JobFailed(f"cannot load entrypoint {spec.entrypoint!r}: {e}") from e
    plain = ctx_cls is None  # not a recorded copy: it checkpoints, and may resume
    ctx = (ctx_cls or Context)(
        seed=spec.seed,
        params=dict(spec.params),
        device=device,
        workspace=workspace or req.workspace,
        inputs={k: Path(v) for k, v in req.inputs.items()},
        events=events,
        digest_every=spec.track.digest_every,
        seed_dataloader=knobs.seed_dataloader,
        job_dir=req.dir if plain else None,
        resume=Path(req.resume) if plain and req.resume else None,
    )
    if plain and spec.track.checkpoint_every:
        ctx.checkpoint_every(spec.track.checkpoint_every)
    child["timing"]["user_start"] = time.monotonic()
    if around is None:
        returned = func(ctx)
    else:
        with around:
            returned = func(ctx)
    child["timing"]["user_end"] = time.monotonic()
    if returned is not None and not isinstance(returned, dict):
        raise JobFailed(f"train() must return a dict of metrics or None, got {type(returned).__name__}")
    child["metrics"] = encode_metrics(returned) if returned else dict(ctx.last_metrics)
    child["resumed"] = ctx.resumed
    return ctx


def recorded_pair(req: LaunchRequest, specs: dict[str, JobSpec], bound: Any) -> Any:
    """Run two copies of the job (`specs` "a" and "b") op-recorded up to `bound`; their report."""
    from reprotrain.job import oprecord

    return oprecord.run_pair(
        req.dir / JobFiles.RECORDED, _recorded_body(req, specs), bound, cwd=req.workspace
    )


def recorded_side(req: LaunchRequest, spec: JobSpec, side: str, bound: Any) -> dict[str, Any]:
    """One side of a bisect across environments: one copy recorded alone into
    `recorded/<side>.stream` (stored as an artifact; side b's worker compares the two)."""
    from reprotrain.job import oprecord

    body = _recorded_body(req, {side: spec})
    out = req.dir / side_stream(side)
    return oprecord.record_one(
        req.dir / JobFiles.RECORDED, body, bound, cwd=req.workspace, side=side, out=out
    )


def _recorded_body(req: LaunchRequest, specs: dict[str, JobSpec]) -> Any:
    from reprotrain import report
    from reprotrain.job import oprecord

    def body(side: str, rec: oprecord.OpRecorder, bound: oprecord.Bound) -> None:
        spec = specs[side]
        knobs = resolve(spec.determinism)
        here = req.dir / JobFiles.RECORDED / side
        os.environ.update(knobs.env())
        os.environ[JobEnv.EVENTS] = str(here.parent / f"{side}.events")
        os.environ[JobEnv.OUTPUT_DIR] = str(here / "outputs")
        events = EventWriter(here.parent / f"{side}.events")
        device = apply(spec, knobs, events)
        rec.install()
        child: dict[str, Any] = {"timing": {}}
        if spec.mode == "function":
            ctx_cls = oprecord.recording_context(rec, bound)
            run_function(req, spec, knobs, device, events, child, ctx_cls=ctx_cls, workspace=here, around=rec)
        else:
            report._recording_hook = oprecord.script_hook(rec, bound)
            with rec:
                run_script(spec, child)

    return body


def run_script(spec: JobSpec, child: dict[str, Any]) -> None:
    """Run the command: in this process when it is `python X.py`/`python -m M`, else as argv."""
    argv = list(spec.command or [])
    child["timing"]["user_start"] = time.monotonic()
    try:
        if inline_python(argv):
            _run_python_inline(argv[1:])
        else:
            _run_subprocess(argv)
    finally:
        child["timing"]["user_end"] = time.monotonic()


def _run_python_inline(args: list[str]) -> None:
    try:
        if args[0] == "-m":
            if len(args) < 2:
                raise JobFailed("'python -m' needs a module name")
            sys.argv = [args[1], *args[2:]]
            _sys_path_of_a_new_interpreter(os.getcwd())
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            script = Path(args[0])
            if not script.is_file():
                raise JobFailed(f"script not found in the job's working directory: {args[0]}")
            sys.argv = list(args)
            _sys_path_of_a_new_interpreter(str(script.resolve().parent))
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise JobFailed(f"script exited with status {e.code}") from None


def _sys_path_of_a_new_interpreter(first: str) -> None:
    """What `python X.py` would start with: the script's directory, then PYTHONPATH (the job's
    code and working directory), then the rest. A forked job process inherited none of that."""
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[0:0] = [first, *extra]


def _run_subprocess(argv: list[str]) -> None:
    exe = argv[0]
    if exe in PYTHON_NAMES:
        exe = sys.executable
    elif shutil.which(exe) is None:
        raise JobFailed(f"command not found: {exe}")
    sys.stdout.flush()
    sys.stderr.flush()
    rc = subprocess.run([exe, *argv[1:]], stdin=subprocess.DEVNULL, check=False).returncode
    if rc != 0:
        raise JobFailed(f"command exited with status {rc}")


def collect(
    req: LaunchRequest, spec: JobSpec, knobs: Knobs, device: Any, ctx: Any, child: dict[str, Any]
) -> None:
    """Digests of tracked state, effective settings and fingerprint into the child record."""
    from reprotrain.job import fingerprint
    from reprotrain.job.apply import effective
    from reprotrain.job.digest import model_state, save_state_file

    eff = EffectiveKnobs.model_validate(effective())
    child["determinism"] = DeterminismRecord(policy=knobs.policy, requested=knobs, effective=eff)
    if ctx is not None:
        child["digests"] = ctx.final_state_digests()
        if ctx.model is not None:
            (req.dir / JobFiles.STATE).parent.mkdir(exist_ok=True)
            save_state_file(model_state(ctx.model), req.dir / JobFiles.STATE)
            child["state_file"] = JobFiles.STATE
    child["fingerprint"] = fingerprint.collect(
        device_type=getattr(device, "type", "cpu"),
        determinism=EnvKnobs.model_validate(eff.model_dump(exclude={"torch_initial_seed"})),
    )


def run(req: LaunchRequest) -> int:
    """The whole job process; returns its exit status (0 when the job succeeded)."""
    try:
        confine.enter(req.confine)  # returns in the confined job; before it, nothing of the job runs
    except confine.ConfineError as e:
        error = JobError(type="IsolationFailed", message=f"the job could not be confined: {e}")
        record = ChildRecord(status=Status.FAILED, error=error, timing={"process_start": time.monotonic()})
        write_atomic(req.dir / JobFiles.CHILD, record.model_dump_json())
        return 1
    become_subreaper()  # what the job daemonizes stays below it, and is killed when it ends
    spec = req.spec
    knobs = resolve(spec.determinism)
    prepare(req, spec, knobs)
    events = EventWriter(req.dir / JobFiles.EVENTS)
    child: dict[str, Any] = {
        "status": Status.FAILED,
        "error": None,
        "metrics": {},
        "digests": {},
        "timing": {"process_start": time.monotonic()},
    }
    device = ctx = None
    try:
        plain = spec.bisect is None and not spec.determinism.preflight
        if plain or _checked_first(req, spec, child):
            device = apply(spec, knobs, events)
            if spec.mode == "function":
                ctx = run_function(req, spec, knobs, device, events, child)
            else:
                run_script(spec, child)
                child["resumed"] = _script_resumed(req)
            child["status"] = Status.SUCCEEDED
    except BaseException as e:  # noqa: BLE001 - whatever user code raises becomes the job's error
        child["error"] = _error(e)
        if not isinstance(e, JobFailed):
            traceback.print_exc()
    finally:
        status = _finish(req, spec, knobs, device, ctx, child)
    return status


def _script_resumed(req: LaunchRequest) -> dict[str, Any] | None:
    """What a script's `reprotrain.checkpoint.resume()` recorded when it reached its checkpoint."""
    from reprotrain.checkpoint import RESUMED

    try:
        return json.loads((req.dir / RESUMED).read_text()) if req.resume else None
    except (OSError, ValueError):
        return None


def _checked_first(req: LaunchRequest, spec: JobSpec, child: dict[str, Any]) -> bool:
    """A bisect job's copies, or the pre-flight check; False when the job itself is not to run."""
    from reprotrain.bisect import PreflightRecord
    from reprotrain.job.oprecord import Bound

    if spec.bisect is not None and spec.bisect.side is not None:
        rec = recorded_side(req, spec, spec.bisect.side, Bound(until_step=spec.bisect.until_step))
        if rec["error"]:
            child["error"] = JobError(
                type="RecordingFailed", message=f"the recorded copy failed: {rec['error']}"
            )
        else:
            child["status"] = Status.SUCCEEDED
        return False
    if spec.bisect is not None:
        other = spec.bisect.against or spec
        report = recorded_pair(req, {"a": spec, "b": other}, Bound(until_step=spec.bisect.until_step))
        child["bisect"] = report.model_copy(update={"a": spec.bisect.a, "b": spec.bisect.b})
        child["status"] = Status.SUCCEEDED
        return False
    steps = spec.determinism.preflight
    report = recorded_pair(req, {"a": spec, "b": spec}, Bound(steps=steps))
    if report.found == "none" and report.errors:  # both copies failed alike: the run says how
        return True
    if report.found != "none":
        child["bisect"] = report
        message = f"pre-flight ({steps} steps, two copies): {report.summary}"
        if spec.determinism.policy == "off":
            message += " (policy off: the copies are not seeded, so the first random op differs)"
        child["error"] = JobError(type="nondeterministic", message=message)
        return False
    passed = PreflightRecord(steps=report.steps_compared, ops=report.ops_compared, seconds=report.seconds)
    child["preflight"] = passed
    return True


def _finish(
    req: LaunchRequest, spec: JobSpec, knobs: Knobs, device: Any, ctx: Any, child: dict[str, Any]
) -> int:
    """Collect what the job left and write its child record; the job process's exit status."""
    sys.stdout.flush()
    try:
        if device is None and child.get("bisect") is not None:
            device = apply(spec, knobs, EventWriter(os.devnull))  # for the fingerprint: the copies ran alone
        collect(req, spec, knobs, device, ctx, child)
    except Exception as e:  # noqa: BLE001 - a failing collection fails the job, loudly
        traceback.print_exc()
        child["status"], child["error"] = Status.FAILED, _error(e)
    record = _record(child)
    write_atomic(req.dir / JobFiles.CHILD, record.model_dump_json())
    sys.stderr.flush()
    return 0 if record.status is Status.SUCCEEDED else 1


def _error(e: BaseException) -> JobError:
    from reprotrain.job.apply import nondeterministic_op

    message = str(e) or type(e).__name__
    if isinstance(e, SystemExit):
        message = f"job exited with status {e.code}"
    return JobError(type=type(e).__name__, message=message, nondeterministic_op=nondeterministic_op(message))


def _record(child: dict[str, Any]) -> ChildRecord:
    """The child record; one that breaks its own contract fails the job instead of the supervisor."""
    try:
        return ChildRecord.model_validate(child)
    except ValidationError as e:
        traceback.print_exc()
        timing = child.get("timing") or {"process_start": time.monotonic()}
        error = JobError(type="ChildRecordInvalid", message=f"the job process wrote an invalid record: {e}")
        return ChildRecord(status=Status.FAILED, error=error, timing=timing)


def main(argv: list[str] | None = None) -> int:
    """Fresh-interpreter entry: ``python -m reprotrain.job.process JOB_DIR/request.json``."""
    args = sys.argv[1:] if argv is None else argv
    req = LaunchRequest.model_validate_json(Path(args[0]).read_text())
    return run(req)


if __name__ == "__main__":
    os._exit(main())
