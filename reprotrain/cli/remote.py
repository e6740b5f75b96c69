"""Client commands over the REST API: submit, rerun, show, ls, logs, cancel, compare."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from reprotrain.cli import data, evidence
from reprotrain.cli.output import REPRODUCED, _metrics, format_job, format_runs, format_verdict, print_json
from reprotrain.client import Client
from reprotrain.errors import ReprotrainError, SpecInvalid
from reprotrain.spec import load_spec, loads_spec, parse_spec
from reprotrain.status import Status


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
    p.add_argument("spec", help="job spec file (YAML or JSON); - reads it from standard input")
    p.add_argument("--bundle", metavar="DIR", help="upload DIR as the job's code bundle")
    p.add_argument("--seed", type=int, help="override the spec's seed")
    p.add_argument("--wait", action="store_true", help="wait for the job, showing progress")
    p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("rerun", parents=[common], help="re-run a job by id and print the verdict")
    p.add_argument("id")
    p.add_argument(
        "--env",
        choices=["same", "any"],
        default="same",
        help="same (default): only on a worker of the original's environment; any: on the spec's "
        "queue, the verdict saying when the environments differ",
    )
    p.add_argument("--wait", action="store_true", help="wait for the re-run and print its verdict")
    p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    p.set_defaults(func=cmd_rerun)

    p = sub.add_parser(
        "show", parents=[common], help="show one job (an id or a unique prefix of 6+ characters)"
    )
    p.add_argument("id")
    p.set_defaults(func=lambda a: _show(a, Client(a.url, a.token).get(a.id)))

    p = sub.add_parser(
        "ls",
        parents=[common],
        help="list jobs, newest first",
        description="Jobs newest first, with duration, params, final metrics and a re-run's verdict; "
        "every filter narrows.",
    )
    p.add_argument("--status", action="append", help="filter by status (repeatable)")
    p.add_argument("--name", help="filter by job name (exact)")
    p.add_argument("--search", help="part of the name, or the start of the id")
    p.add_argument("--tag", help="jobs with this tag")
    p.add_argument("--project", help="jobs of this project")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="K=V",
        help="a param's value, e.g. lr=0.1 (repeatable)",
    )
    p.add_argument("--verdict", action="append", help="a re-run's verdict, or none (repeatable)")
    p.add_argument("--rerun-of", help="only re-runs of this job")
    p.add_argument(
        "--metrics", help="comma-separated final metrics to show as columns (default: the first two)"
    )
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser(
        "logs",
        parents=[common],
        help="print a job's stdout (or stderr)",
        description="Print the log's bytes as the job wrote them. There is no JSON form: --json "
        "(an option every server command shares) is refused here.",
    )
    p.add_argument("id")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming until the job ends")
    p.add_argument("--stderr", action="store_true", help="stderr instead of stdout")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser(
        "cancel",
        parents=[common],
        help="cancel a queued or running job",
        description="A queued job is CANCELED at once; a running one is asked to stop (SIGTERM, then "
        "SIGKILL) by its worker: --wait waits for it to end.",
    )
    p.add_argument("id")
    p.add_argument("--wait", action="store_true", help="wait until the job has ended")
    p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser(
        "rm",
        parents=[common],
        help="delete ended jobs, their logs and the stored files no other job holds",
        description="Delete each job (an id or a unique prefix): its row, logs, working directory and "
        "every stored file no other job holds. A queued or running job, or the original of a re-run, "
        "is refused. Exit 2 when any was refused.",
    )
    p.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser(
        "compare",
        parents=[common],
        help="verdict of B against A (job ids or run dirs)",
        description="Compare B (a re-run) with A (the original). A and B are job ids (or unique "
        "prefixes of 6+ characters) on a server, or local run directories / result.json files: "
        "a path that exists here is taken as a run, anything else as a job id.",
    )
    p.add_argument("a")
    p.add_argument("b")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser(
        "bisect",
        parents=[common],
        help="find the first operation where run b parted from run a",
        description="Re-run a's spec as two copies recorded op by op up to the first step where the "
        "runs part, and name the first op whose outputs differ: its module path, source line, shapes "
        "and how much each output differs. Takes two job ids (a bisect job on the server) or two "
        "run directories (run here, like `reprotrain run`).",
    )
    p.add_argument("a", help="the original: job id (prefix) or run directory")
    p.add_argument("b", help="the run that diverged from it")
    p.add_argument("--wait", action="store_true", help="wait for the bisect job and print its report")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait (default: no limit)")
    p.set_defaults(func=cmd_bisect)

    evidence.add_commands(sub, common)
    data.add_commands(sub, common)


def _emit(args: argparse.Namespace, obj: dict[str, Any], template: str) -> int:
    print_json(obj) if args.json else print(template.format(**obj))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    client, done, failed = Client(args.url, args.token), [], 0
    for ref in args.ids:
        try:
            answer = client.delete(ref)
        except ReprotrainError as e:
            failed += 1
            print(f"reprotrain: error: {ref}: {e}", file=sys.stderr)
            continue
        done.append(answer)
        if not args.json:
            freed = f"{answer['artifacts_removed']} stored files, {answer['bytes_freed']} bytes freed"
            print(f"deleted {answer['id']} ({freed})")
    if args.json:
        print_json({"deleted": done, "failed": failed})
    return 2 if failed else 0


def cmd_cancel(args: argparse.Namespace) -> int:
    client = Client(args.url, args.token)
    answer = client.cancel(args.id)
    if not args.json:
        if answer["status"] == "CANCELED":
            print(f"{answer['id']}: CANCELED")
        else:
            hint = "" if args.wait else " (--wait waits for the end)"
            print(f"{answer['id']}: cancel requested; its worker stops it{hint}")
    if not args.wait:
        return _emit(args, answer, "") if args.json else 0
    job = client.wait(answer["id"], timeout=args.timeout)
    return _emit(args, job, "{id}: {status}")


def _show(args: argparse.Namespace, job: dict[str, Any]) -> int:
    print_json(job) if args.json else print(format_job(job))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    if args.spec == "-":
        spec = parse_spec(loads_spec(sys.stdin.read(), source="standard input")).canonical()
    else:
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
    job = client.rerun(args.id, env=args.env)
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
    progress = Progress(job_id)
    try:
        return client.wait(job_id, timeout=args.timeout, on_trace=progress)
    finally:
        progress.bar.stop()


class Progress:
    """`--wait`'s live line: status, steps, the latest metrics (kept until newer ones come), and,
    once the job declares its step count, a bar with percent and time left."""

    def __init__(self, job_id: str, console: Any = None) -> None:
        from rich.progress import (
            BarColumn,
            SpinnerColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        self.bar = Bar(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            transient=True,
            console=console,
        )
        self.job_id, self.last = job_id, None
        self.task = self.bar.add_task(f"{job_id[:12]} queued", total=None)
        self.bar.start()

    def __call__(self, new: list[dict[str, Any]], page: dict[str, Any]) -> None:
        if new:
            self.last = new[-1]
        text = f"{self.job_id[:12]} {page['status'].lower()}  {page['count']} steps"
        if self.last:
            text += f"  step {self.last['step']}  {_metrics(self.last['metrics'])}"
        done = self.last["step"] + 1 if self.last else 0
        self.bar.update(self.task, description=text, total=page.get("total"), completed=done)
        if Status(page["status"]).is_final:
            self.bar.stop()


def cmd_ls(args: argparse.Namespace) -> int:
    params = {}
    for item in args.param:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise SpecInvalid(f"not K=V: {item!r}", field="--param")
        params[key] = value
    page = Client(args.url, args.token).runs(
        status=args.status,
        name=args.name,
        search=args.search,
        tag=args.tag,
        project=args.project,
        verdict=args.verdict,
        rerun_of=args.rerun_of,
        params=params,
        limit=args.limit,
        offset=args.offset,
    )
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    print_json(page) if args.json else print(format_runs(page, metrics))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    if args.json:
        raise SpecInvalid("logs prints the log as the job wrote it; there is no JSON form", field="--json")
    out = sys.stdout.buffer
    for chunk in Client(args.url, args.token).logs(
        args.id, stream="stderr" if args.stderr else "stdout", follow=args.follow
    ):
        out.write(chunk)
        out.flush()
    return 0


def _is_job_id(s: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-fA-F]{6,32}", s)) and not Path(s).exists()


def cmd_bisect(args: argparse.Namespace) -> int:
    if _pair_kind(args.a, args.b, "bisect") == "runs":
        from reprotrain.cli.local import bisect_local

        return bisect_local(args.a, args.b, args.json)
    client = Client(args.url, args.token)
    job = client.bisect(args.a, args.b)
    if not args.wait:
        return _show(args, job)
    return _finish(args, _wait(client, job["id"], args))


def _pair_kind(a: str, b: str, command: str) -> str:
    """ "runs" for two run directories here, "jobs" for two job ids; SpecInvalid for a mix."""
    pair = (a, b)
    runs = [not _is_job_id(x) for x in pair]
    missing = [x for x, run in zip(pair, runs, strict=True) if run and not Path(x).exists()]
    if missing:
        raise SpecInvalid(f"{missing[0]!r} is neither a run directory here nor a job id (6 to 32 hex digits)")
    if all(runs):
        return "runs"
    if any(runs):
        run, job = (a, b) if runs[0] else (b, a)
        raise SpecInvalid(
            f"{command} takes two job ids or two run directories: {run!r} is a run here, {job!r} a job id"
        )
    return "jobs"


def cmd_compare(args: argparse.Namespace) -> int:
    if _pair_kind(args.a, args.b, "compare") == "runs":
        from reprotrain.cli.local import compare_local

        return compare_local(args.a, args.b, args.json)
    verdict = Client(args.url, args.token).compare(args.a, args.b)
    print_json(verdict) if args.json else print(format_verdict(verdict))
    return 0 if verdict["verdict"] in REPRODUCED else 1
