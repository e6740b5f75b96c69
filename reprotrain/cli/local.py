"""`reprotrain run` and local `compare`: the execution core without any server."""

from __future__ import annotations

import argparse
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from reprotrain.cli.output import REPRODUCED, format_result, format_verdict, print_json
from reprotrain.errors import SpecInvalid
from reprotrain.spec import load_spec, parse_spec


def add_commands(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run one job locally through the worker's runner",
        description="Run a job spec (YAML or JSON) in a fresh job process and store "
        "its result, logs and outputs in a run directory. No server needed.",
    )
    run.add_argument("spec", help="job spec file (YAML or JSON)")
    run.add_argument("--out", metavar="DIR", help="run directory (default: runs/NAME-TIME-RAND)")
    run.add_argument(
        "--code",
        metavar="DIR",
        help="job code: function mode imports from it (default: current directory);"
        " script mode runs in a fresh copy of it (default: the spec's directory)",
    )
    run.add_argument("--seed", type=int, help="override the spec's seed")
    run.add_argument(
        "--resume",
        metavar="RUN",
        help="go on from the last complete checkpoint of an interrupted run directory (or from a "
        "checkpoint directory); the new run goes to --out",
    )
    run.add_argument(
        "--policy", choices=["off", "seeded", "strict", "warn"], help="override the spec's determinism policy"
    )
    run.add_argument(
        "--runner",
        choices=["fork", "spawn"],
        default="fork",
        help="fork from a torch-preloaded server (default) or a fresh interpreter",
    )
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    run.set_defaults(func=cmd_run)


def _load_run_spec(args: argparse.Namespace) -> Any:
    spec = load_spec(args.spec)
    if args.seed is None and args.policy is None:
        return spec
    data = spec.canonical()
    if args.seed is not None:
        data["seed"] = args.seed
    if args.policy is not None:
        data["determinism"]["policy"] = args.policy
    return parse_spec(data)


def cmd_run(args: argparse.Namespace) -> int:
    from reprotrain.job.supervisor import execute

    spec = _load_run_spec(args)
    code = (
        Path(args.code)
        if args.code
        else (Path.cwd() if spec.mode == "function" else Path(args.spec).resolve().parent)
    )
    if not code.is_dir():
        raise SpecInvalid(f"code directory does not exist: {code}", field="--code")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/{spec.name}-{stamp}-{secrets.token_hex(2)}")
    resume = _checkpoint(Path(args.resume), spec) if args.resume else None
    with _runner(args.runner) as runner:
        result = execute(runner, spec, out, code_dir=code, resume=resume)
    if resume is not None:
        result = _record_resume(result, out)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(format_result(result, out))
    return 0 if result.status.value == "SUCCEEDED" else 1


def _record_resume(result: Any, out: Path) -> Any:
    """The result of a local run that went on from a checkpoint, with that resume in `resumes`
    (as the service records a worker's): where it went on from, or that it did not get there."""
    from reprotrain.job.supervisor import read_child
    from reprotrain.result import Resume

    child = read_child(out)
    at = child.resumed if child is not None else None
    if isinstance(at, dict):
        got = {"from_step": at.get("from_step"), "checkpoint": int(at.get("checkpoint") or 0)}
        resume = Resume(attempt=2, worker="local", logs=int(at.get("logs") or 0), restored=True, **got)
    else:
        note = "the run did not reach the checkpoint's step boundary: it ran from the start"
        resume = Resume(attempt=2, worker="local", checkpoint=0, restored=False, note=note)
    result = result.model_copy(update={"resumes": [resume]})
    result.save(out)
    return result


def _checkpoint(path: Path, spec: Any) -> Path:
    """A checkpoint directory, or the last complete one of a run directory; refused when the run
    that made it ran another spec (another seed, say): its steps before the checkpoint would be
    that spec's, under this one's name."""
    from reprotrain.checkpoint import META, complete
    from reprotrain.wire import JobFiles

    if (path / META).is_file():
        found, run = path, path.parent.parent  # RUN/checkpoints/NNNNNN
    else:
        complete_ones = complete(path / JobFiles.CHECKPOINTS)
        if not complete_ones:
            raise SpecInvalid(f"{path} holds no complete checkpoint", field="--resume")
        found, run = complete_ones[-1], path
    _same_spec(run / JobFiles.REQUEST, spec)
    return found


def _same_spec(request: Path, spec: Any) -> None:
    """The run that checkpointed (its launch request, where there is one) ran `spec`."""
    from reprotrain.job.request import LaunchRequest

    try:
        before = LaunchRequest.model_validate_json(request.read_bytes()).spec
    except (OSError, ValueError):
        return  # a checkpoint directory on its own: nothing to check it against
    if before.digest == spec.digest:
        return
    a, b = before.canonical(), spec.canonical()
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    raise SpecInvalid(
        f"the checkpoint was made by a run of another spec ({', '.join(keys)} differ): resume "
        "with the spec it ran, or start a new run without --resume",
        field="--resume",
    )


def _runner(kind: str = "fork") -> Any:
    from reprotrain.job.launcher import ForkRunner, SpawnRunner
    from reprotrain.settings import load_settings

    settings = load_settings()  # REPROTRAIN_ISOLATION and REPROTRAIN_JOB_UID apply to local runs too
    if kind == "fork":
        return ForkRunner(isolation=settings.isolation, job_uid=settings.job_uid)
    return SpawnRunner()


def bisect_local(a_path: str, b_path: str, as_json: bool) -> int:
    """Bisect two local runs: a bisect run of a's spec (and code) beside them, and its report."""
    from reprotrain.bisect import BisectReport, Run, bisect_specs, describe
    from reprotrain.compare import compare
    from reprotrain.job.checkpoints import compare_checkpoints
    from reprotrain.job.supervisor import execute
    from reprotrain.outputs import RunFiles
    from reprotrain.result import load_result
    from reprotrain.wire import JobFiles

    (a, a_dir), (b, b_dir) = load_result(a_path), load_result(b_path)
    verdict = compare(a, b, RunFiles.local(a_dir), RunFiles.local(b_dir), checkpoints=compare_checkpoints)
    runs = []
    for r, d in ((a, a_dir), (b, b_dir)):
        fingerprint = r.fingerprint.model_dump(mode="json") if r.fingerprint else None
        code = r.code.digest if r.code else None
        runs.append(Run.of(str(d), r.spec, r.spec_digest, fingerprint, steps=len(r.trace), code=code))
    (spec,) = bisect_specs(runs[0], runs[1], verdict)  # one environment here: one job
    # function mode imports from here, as `reprotrain run` does; a script runs in a copy of the
    # working directory a's run started from (its code, with what it wrote)
    code = a_dir / JobFiles.WORK if spec.mode == "script" else Path.cwd()
    out = a_dir.parent / f"{a_dir.name}-bisect-{secrets.token_hex(2)}"
    with _runner() as runner:
        result = execute(runner, spec, out, code_dir=code)
    if as_json:
        print(result.model_dump_json(indent=2))
    elif result.bisect is not None:
        print(describe(BisectReport.model_validate(result.bisect)))
        print(f"run       {out}")
    else:
        print(format_result(result, out))
    return 0 if result.bisect is not None and result.status.value == "SUCCEEDED" else 1


def compare_local(a_path: str, b_path: str, as_json: bool) -> int:
    from reprotrain.bisect import bisect_offered
    from reprotrain.compare import compare
    from reprotrain.job.checkpoints import compare_checkpoints
    from reprotrain.outputs import RunFiles
    from reprotrain.result import load_result

    a, a_dir = load_result(a_path)
    b, b_dir = load_result(b_path)
    files = RunFiles.local(a_dir), RunFiles.local(b_dir)
    found = compare(a, b, *files, checkpoints=compare_checkpoints)
    verdict = found.model_dump(mode="json")
    if as_json:
        print_json(verdict)
    else:
        print(format_verdict(verdict, names=(a_path, b_path), bisect=bisect_offered(found, a.spec)))
    return 0 if verdict["verdict"] in REPRODUCED else 1
