"""The client commands as a user types them, against a real `reprotrain serve`: id prefixes,
artifacts, trace, fingerprint, a failed job's show, cancel, compare's two kinds of argument,
`submit -`, `--version`, and --json honoured or refused."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reprotrain.client import Client
from tests.helpers import ROOT, Serve, base_spec, script_spec, start_serve, wait_for

FAILING = """\
def inner():
    return 1 / 0

print("about to fail", flush=True)
inner()
"""
SLEEPER = """\
import time
print("sleeping", flush=True)
time.sleep(120)
"""


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    s = start_serve(tmp_path_factory.mktemp("cli-serve"))
    yield s
    s.stop()


def cli(
    serve: Serve, *args: str, stdin: str | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPROTRAIN_")} | {
        "REPROTRAIN_URL": serve.url
    }
    return subprocess.run(
        [sys.executable, "-m", "reprotrain.cli", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def done(serve: Serve) -> dict[str, Any]:
    """A finished job (its id as the CLI prints it) and its stored facts, from the API."""
    with Client(serve.url) as c:
        job = c.wait(c.submit(base_spec(name="cli-mlp", tags=["cli"]))["id"], timeout=120)
        assert job["status"] == "SUCCEEDED", job["error"]
        return job


def test_version_and_submit_from_standard_input(serve: Serve) -> None:
    p = cli(serve, "--version")
    assert p.returncode == 0 and p.stdout.strip().startswith("reprotrain 0.")
    spec = json.dumps(base_spec(name="from-stdin"))
    p = cli(serve, "submit", "-", "--json", "--wait", stdin=spec)
    assert p.returncode == 0, p.stderr
    job = json.loads(p.stdout)
    assert job["name"] == "from-stdin" and job["status"] == "SUCCEEDED"
    p = cli(serve, "submit", "-", stdin="entrypoint: [oops\n")
    assert p.returncode == 2 and "standard input is not valid YAML/JSON" in p.stderr


def test_every_command_takes_a_unique_id_prefix(serve: Serve, done: dict[str, Any]) -> None:
    prefix = done["id"][:8]
    p = cli(serve, "show", prefix, "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["id"] == done["id"]
    for args in (
        ["trace", prefix, "--json"],
        ["artifacts", prefix, "--json"],
        ["fingerprint", prefix, "--json"],
    ):
        assert cli(serve, *args).returncode == 0, args
    p = cli(serve, "show", done["id"][:5])
    assert p.returncode == 2 and "a prefix needs 6 characters" in p.stderr
    p = cli(serve, "show", "0123456789")
    assert p.returncode == 2 and "no job with id '0123456789'" in p.stderr


def test_artifacts_list_and_download(serve: Serve, done: dict[str, Any], tmp_path: Path) -> None:
    with Client(serve.url) as c:
        listed = c.artifacts(done["id"])["data"]
        name = next(a["name"] for a in listed if a["name"].endswith("model.safetensors"))
        expected = c.download(done["id"], name)
    p = cli(serve, "artifacts", done["id"])
    assert p.returncode == 0, p.stderr
    for a in listed:
        assert a["name"] in p.stdout and a["digest"][:16] in p.stdout
    out = tmp_path / "model.bin"
    p = cli(serve, "artifacts", done["id"][:10], name, "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == expected
    p = cli(serve, "artifacts", done["id"], "no/such/file")
    assert p.returncode == 2 and "no artifact named 'no/such/file'" in p.stderr


def test_trace_as_table_json_and_csv(serve: Serve, done: dict[str, Any]) -> None:
    with Client(serve.url) as c:
        trace = c.trace(done["id"])["data"]
    assert trace
    rows = list(csv.DictReader(io.StringIO(cli(serve, "trace", done["id"], "--csv").stdout)))
    assert [int(r["step"]) for r in rows] == [e["step"] for e in trace]
    name = next(iter(trace[0]["metrics"]))
    assert [float(r[name]) for r in rows] == [e["metrics"][name] for e in trace]  # exact: repr round-trips
    table = cli(serve, "trace", done["id"]).stdout
    assert repr(trace[-1]["metrics"][name]) in table and f"({len(trace)} steps" in table
    assert json.loads(cli(serve, "trace", done["id"], "--json").stdout)["data"] == trace


def test_fingerprint_and_its_difference(serve: Serve, done: dict[str, Any]) -> None:
    with Client(serve.url) as c:
        spec = base_spec(name="cli-threads", determinism={"policy": "strict", "num_threads": 2})
        other = c.wait(c.submit(spec)["id"], timeout=120)
    p = cli(serve, "fingerprint", done["id"])
    assert p.returncode == 0 and "env digest" in p.stdout and "torch.version" in p.stdout
    p = cli(serve, "fingerprint", done["id"], "--diff", other["id"])
    assert p.returncode == 0, p.stderr
    assert "env digest differs" in p.stdout
    assert "! determinism.num_threads: 1 → 2" in p.stdout
    same = cli(serve, "fingerprint", done["id"], "--diff", done["id"]).stdout
    assert "the fingerprints are equal" in same
    diff = json.loads(cli(serve, "fingerprint", done["id"], "--diff", other["id"], "--json").stdout)
    assert {"key": "determinism.num_threads", "a": 1, "b": 2}.items() <= next(
        r for r in diff["differs"] if r["key"] == "determinism.num_threads"
    ).items()


def test_show_of_a_failed_job_says_type_message_traceback_and_where_the_rest_is(
    serve: Serve, tmp_path: Path
) -> None:
    with Client(serve.url) as c:
        job = c.wait(c.submit(script_spec(c, tmp_path / "code", FAILING, name="fails"))["id"], timeout=120)
    assert job["status"] == "FAILED"
    out = cli(serve, "show", job["id"][:12]).stdout
    assert "ZeroDivisionError: division by zero" in out
    assert "in inner" in out and "return 1 / 0" in out  # the traceback's tail
    assert f"reprotrain logs {job['id']} --stderr" in out


def test_cancel_says_what_happens_and_can_wait(serve: Serve, tmp_path: Path) -> None:
    with Client(serve.url) as c:
        job = c.submit(script_spec(c, tmp_path / "code", SLEEPER, name="sleeper"))
        wait_for(lambda: c.get(job["id"])["status"] == "RUNNING", 60, "the sleeper to start")
    p = cli(serve, "cancel", job["id"][:8], "--wait")
    assert p.returncode == 0, p.stderr
    asked, ended = p.stdout.splitlines()
    assert asked == f"{job['id']}: cancel requested; its worker stops it"
    assert ended == f"{job['id']}: CANCELED"
    p = cli(serve, "cancel", job["id"])
    assert p.returncode == 2 and "already ended with status CANCELED" in p.stderr


def test_compare_tells_job_ids_from_run_directories(
    serve: Serve, done: dict[str, Any], tmp_path: Path
) -> None:
    p = cli(serve, "compare", "deadbeef", "cafebabe")
    assert p.returncode == 2 and "no job with id 'deadbeef'" in p.stderr
    p = cli(serve, "compare", "not-a-run", "neither")
    assert p.returncode == 2 and "'not-a-run' is neither a run directory here nor a job id" in p.stderr
    (tmp_path / "run").mkdir()
    p = cli(serve, "compare", str(tmp_path / "run"), done["id"])
    assert p.returncode == 2 and "two job ids or two run directories" in p.stderr
    p = cli(serve, "compare", done["id"][:8], done["id"])
    assert p.returncode == 0 and "identical" in p.stdout


def test_json_is_honoured_or_refused(serve: Serve, done: dict[str, Any]) -> None:
    p = cli(serve, "logs", done["id"], "--json")
    assert p.returncode == 2 and "no JSON form" in p.stderr
    p = cli(serve, "ls", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["count"] >= 1
    p = cli(serve, "ls", "--status", "DONE")
    assert p.returncode == 2 and "unknown status 'DONE'" in p.stderr


COUNTED = """\
import time
from reprotrain.report import log
for step in range(12):
    log(step, total=12, loss=1.0 / (step + 1))
    time.sleep(0.4)
"""


def test_a_declared_step_count_reaches_the_trace_while_it_runs(serve: Serve, tmp_path: Path) -> None:
    """`log(step, total=N)` (ctx.total_steps in function mode): what --wait draws its bar from."""
    with Client(serve.url) as c:
        job = c.submit(script_spec(c, tmp_path / "code", COUNTED, name="counted"))
        seen: list[Any] = []
        wait_for(lambda: seen.append(c.trace(job["id"])) or seen[-1]["total"] == 12, 60, "a total")
        assert seen[-1]["status"] == "RUNNING"
        done = c.wait(job["id"], timeout=60)
        assert done["status"] == "SUCCEEDED"
        metrics = [e["metrics"] for e in c.trace(job["id"])["data"]]
        assert metrics[0] == {"loss": 1.0} and len(metrics) == 12  # total: not a metric


def test_server_logs_say_each_job_event_with_its_id(serve: Serve, done: dict[str, Any]) -> None:
    """Plain lines by default: one per event, the job id in each; no Celery banner, no root warning,
    no Celery task lines (their ids are not job ids)."""
    out = serve.output()
    for event in ("submitted", "sent", "claimed", "started", "finished"):
        assert f"job {done['id']} {event}" in out, event
    assert f"job {done['id']} finished status=SUCCEEDED" in out
    assert "-------------- " not in out and "SecurityWarning" not in out
    assert "Task reprotrain.run_job[" not in out


def test_json_logs_carry_the_job_id_and_fields(tmp_path: Path) -> None:
    s = start_serve(tmp_path, env={"REPROTRAIN_LOG_FORMAT": "json"})
    try:
        with Client(s.url) as c:
            job = c.wait(c.submit(base_spec(name="json-logs"))["id"], timeout=120)
            rerun = c.wait(c.rerun(job["id"])["id"], timeout=120)
        time.sleep(0.5)  # the worker's last line reaches serve's output
        lines = [json.loads(line) for line in s.output().splitlines() if line.startswith("{")]
    finally:
        s.stop()
    assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    events = [(line["event"], line) for line in lines if line.get("job_id") == rerun["id"]]
    when = {e: line["ts"] for e, line in reversed(events)}  # each event's first time
    assert {"submitted", "sent", "claimed", "started", "verdict", "finished"} <= set(when)
    assert when["submitted"] <= when["sent"] <= when["claimed"] <= when["started"] <= when["finished"]
    verdict = next(line for e, line in events if e == "verdict")
    assert verdict["verdict"] == "identical" and verdict["original"] == job["id"]
    assert next(line for e, line in events if e == "submitted")["rerun_of"] == job["id"]
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # the access log too
    plain = [raw for raw in s.output().splitlines() if raw.strip() and not raw.startswith("{")]
    assert set(plain) <= {"worker: Warm shutdown (MainProcess)"}, plain[:5]  # Celery prints that itself


def test_ls_shows_params_durations_and_metrics_and_filters(serve: Serve, done: dict[str, Any]) -> None:
    with Client(serve.url) as c:
        tuned = c.wait(
            c.submit(
                base_spec(
                    name="cli-tuned",
                    project="cli-proj",
                    tags=["tuned"],
                    params={**base_spec()["params"], "lr": 0.5},
                )
            )["id"],
            timeout=120,
        )
    p = cli(serve, "ls", "--project", "cli-proj", "--metrics", "loss")
    assert p.returncode == 0, p.stderr
    header, row, footer = p.stdout.splitlines()
    assert (
        header.split()[:6] == ["ID", "STATUS", "CREATED", "DURATION", "NAME", "PARAMS"] and "LOSS" in header
    )
    assert row.startswith(tuned["id"][:12]) and "lr=0.5" in row and "cli-tuned" in row
    assert f"{tuned['metrics']['loss']:.6g}" in row and row.split()[4].endswith(
        "s"
    )  # created is date and time
    assert footer == "(1 of 1; offset 0)"
    p = cli(serve, "ls", "--param", "lr=0.5", "--json")
    assert [r["id"] for r in json.loads(p.stdout)["data"]] == [tuned["id"]]
    p = cli(serve, "ls", "--tag", "cli", "--json")
    assert done["id"] in [r["id"] for r in json.loads(p.stdout)["data"]]
    shown = cli(serve, "show", tuned["id"][:8]).stdout
    assert "project   cli-proj  tags tuned" in shown and "lr=0.5" in shown


def test_workers_are_listed_with_their_environment(serve: Serve, done: dict[str, Any]) -> None:
    """The embedded worker has said it is alive; having run a job, with its isolation and the digest
    of its static environment. The same through the CLI and in /metrics."""
    with Client(serve.url) as c:
        wait_for(lambda: (c.workers()["data"] or [{}])[0].get("static_digest") is not None, 30, "presence")
        workers = c.workers()
    assert workers["count"] == 1 and workers["alive"] == 1
    w = workers["data"][0]
    assert w["alive"] and w["isolation"] in ("namespaces", "userns", "none")
    # its own queues, and the queue of its environment (re-runs and bisect sides are routed to it)
    from reprotrain.wire import env_queue

    assert w["queues"] == ["default", env_queue(w["static_digest"])]
    assert len(w["static_digest"]) == 64
    p = cli(serve, "workers")
    assert p.returncode == 0 and w["id"] in p.stdout and "alive" in p.stdout and "(1 alive of 1)" in p.stdout
    import httpx

    metrics = httpx.get(f"{serve.url}/metrics").text
    assert "reprotrain_workers_live 1.0" in metrics
    assert (
        f'reprotrain_worker_last_seen_timestamp_seconds{{static_digest="{w["static_digest"]}",worker="{w["id"]}"}}'
        in metrics
    )
