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
    from reprotrain.job.launcher import ForkRunner, SpawnRunner
    from reprotrain.job.supervisor import execute
    from reprotrain.settings import load_settings

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
    settings = load_settings()  # REPROTRAIN_ISOLATION and REPROTRAIN_JOB_UID apply to local runs too
    runner = (
        ForkRunner(isolation=settings.isolation, job_uid=settings.job_uid)
        if args.runner == "fork"
        else SpawnRunner()
    )
    with runner:
        result = execute(runner, spec, out, code_dir=code)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(format_result(result, out))
    return 0 if result.status.value == "SUCCEEDED" else 1


def compare_local(a_path: str, b_path: str, as_json: bool) -> int:
    from reprotrain.compare import compare
    from reprotrain.job.checkpoints import compare_checkpoints
    from reprotrain.outputs import RunFiles
    from reprotrain.result import load_result

    a, a_dir = load_result(a_path)
    b, b_dir = load_result(b_path)
    files = RunFiles.local(a_dir), RunFiles.local(b_dir)
    verdict = compare(a, b, *files, checkpoints=compare_checkpoints).model_dump(mode="json")
    if as_json:
        print_json(verdict)
    else:
        print(format_verdict(verdict))
    return 0 if verdict["verdict"] in REPRODUCED else 1
