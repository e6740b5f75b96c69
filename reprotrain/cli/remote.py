"""Client commands over the REST API: submit, rerun, show, ls, logs, cancel, compare."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from reprotrain.cli import evidence
from reprotrain.cli.output import REPRODUCED, _metrics, format_job, format_jobs, format_verdict, print_json
from reprotrain.client import Client
from reprotrain.errors import SpecInvalid
from reprotrain.spec import load_spec


def add_commands(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("REPROTRAIN_URL"),
        help="server URL (env REPROTRAIN_URL; default http://127.0.0.1:8000)",
    )
    common.add_argument(
        "--token", default=os.environ.get("REPROTRAIN_TOKEN"), help="API token (env REPROTRAIN_TOKEN)"
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = sub.add_parser(
        "submit",
        parents=[common],
        help="submit a job spec to a server",
        description="Submit a job spec; with --bundle, upload a code directory first.",
    )
    p.add_argument("spec", help="job spec file (YAML or JSON)")
    p.add_argument("--bundle", metavar="DIR", help="upload DIR as the job's code bundle")
    p.add_argument("--seed", type=int, help="override the spec's seed")
    p.add_argument("--wait", action="store_true", help="wait for the job, showing progress")
    p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("rerun", parents=[common], help="re-run a job by id and print the verdict")
    p.add_argument("id")
    p.add_argument("--wait", action="store_true", help="wait for the re-run and print its verdict")
    p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    p.set_defaults(func=cmd_rerun)

    p = sub.add_parser("show", parents=[common], help="show one job")
    p.add_argument("id")
    p.set_defaults(func=lambda a: _show(a, Client(a.url, a.token).get(a.id)))

    p = sub.add_parser("ls", parents=[common], help="list jobs, newest first")
    p.add_argument("--status", action="append", help="filter by status (repeatable)")
    p.add_argument("--name", help="filter by job name")
    p.add_argument("--rerun-of", help="only re-runs of this job")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("logs", parents=[common], help="print a job's stdout (or stderr)")
    p.add_argument("id")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming until the job ends")
    p.add_argument("--stderr", action="store_true", help="stderr instead of stdout")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("cancel", parents=[common], help="cancel a queued or running job")
    p.add_argument("id")
    p.set_defaults(func=lambda a: _emit(a, Client(a.url, a.token).cancel(a.id), "{id}: {status}"))

    p = sub.add_parser(
        "compare",
        parents=[common],
        help="verdict of B against A (job ids or run dirs)",
        description="Compare B (a re-run) with A (the original). A and B are job ids "
        "on a server, or local run directories / result.json files.",
    )
    p.add_argument("a")
    p.add_argument("b")
    p.set_defaults(func=cmd_compare)

    evidence.add_commands(sub, common)


def _emit(args: argparse.Namespace, obj: dict[str, Any], template: str) -> int:
    print_json(obj) if args.json else print(template.format(**obj))
    return 0


def _show(args: argparse.Namespace, job: dict[str, Any]) -> int:
    print_json(job) if args.json else print(format_job(job))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec).canonical()
    if args.seed is not None:
        spec["seed"] = args.seed
    client = Client(args.url, args.token)
    if args.bundle:
        from reprotrain.bundles import make_bundle

        src = Path(args.bundle)
        if not src.is_dir():
            raise SpecInvalid(f"bundle directory does not exist: {src}", field="--bundle")
        spec["bundle"] = client.upload_bundle(make_bundle(src))["digest"]
    job = client.submit(spec)
    if not args.wait:
        return _show(args, job)
    return _finish(args, _wait(client, job["id"], args))


def cmd_rerun(args: argparse.Namespace) -> int:
    client = Client(args.url, args.token)
    job = client.rerun(args.id)
    if not args.wait:
        return _show(args, job)
    job = _wait(client, job["id"], args)
    _show(args, job)
    return 0 if (job.get("verdict") or {}).get("verdict") in REPRODUCED else 1


def _finish(args: argparse.Namespace, job: dict[str, Any]) -> int:
    _show(args, job)
    return 0 if job["status"] == "SUCCEEDED" else 1


def _wait(client: Client, job_id: str, args: argparse.Namespace) -> dict[str, Any]:
    if args.json or not sys.stderr.isatty():
        return client.wait(job_id, timeout=args.timeout)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True
    ) as bar:
        task = bar.add_task(f"{job_id[:12]} queued")

        def on_trace(new: list[dict[str, Any]], page: dict[str, Any]) -> None:
            last = new[-1] if new else None
            text = f"{job_id[:12]} {page['status'].lower()}  {page['count']} steps"
            if last:
                text += f"  step {last['step']}  {_metrics(last['metrics'])}"
            bar.update(task, description=text)

        return client.wait(job_id, timeout=args.timeout, on_trace=on_trace)


def cmd_ls(args: argparse.Namespace) -> int:
    page = Client(args.url, args.token).list(
        status=args.status, name=args.name, rerun_of=args.rerun_of, limit=args.limit, offset=args.offset
    )
    print_json(page) if args.json else print(format_jobs(page))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    for chunk in Client(args.url, args.token).logs(
        args.id, stream="stderr" if args.stderr else "stdout", follow=args.follow
    ):
        out.write(chunk)
        out.flush()
    return 0


def _is_job_id(s: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-f]{32}", s)) and not Path(s).exists()


def cmd_compare(args: argparse.Namespace) -> int:
    if not (_is_job_id(args.a) and _is_job_id(args.b)):
        from reprotrain.cli.local import compare_local

        return compare_local(args.a, args.b, args.json)
    verdict = Client(args.url, args.token).compare(args.a, args.b)
    print_json(verdict) if args.json else print(format_verdict(verdict))
    return 0 if verdict["verdict"] in REPRODUCED else 1
