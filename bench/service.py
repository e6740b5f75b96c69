"""Service benchmarks on a real stack (uvicorn + Celery worker + redis-server + SQLite/PostgreSQL).

1. submit rate: job submissions per second through the API (validation, store, enqueue) against
   a bare FastAPI endpoint validating the same body, same machine, same run;
2. end-to-end overhead: submit → SUCCEEDED minus the job's own run time, for a trivial job.

    python -m bench.service [--db sqlite|postgres] [--workers N] [--seconds 5] [--clients 8] [--jobs 30]

With `--workers N` (PostgreSQL) both servers run N processes: `reprotrain api --workers N` and
uvicorn's `--workers N` for the bare app.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

from reprotrain.status import Status

ROOT = Path(__file__).resolve().parents[1]
SPEC = {
    "name": "bench",
    "entrypoint": "reprotrain.examples.noop:train",
    "seed": 1,
    "determinism": {"policy": "strict"},
    "device": "cpu",
    "params": {"lr": 0.1, "epochs": 1},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if httpx.get(url).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} not ready")


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(30)


PG_NAME = f"reprotrain_bench_{os.getpid()}"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes have used so far."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def tree(pid: int) -> list[int]:
    """A process and its descendants (the API's worker processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            pass
    return out


def named(name: str) -> list[int]:
    """Every process whose command is `name` (the PostgreSQL server's backends and writers)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == name:
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True)


def durability() -> str:
    """The bench database's commit durability, as a session of the API's role sees it."""
    shown = []
    for name in ("synchronous_commit", "fsync"):
        argv = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", PG_NAME, "-tAc", f"SHOW {name}"]
        value = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()
        shown.append(f"{name}={value}")
    return ", ".join(shown)


def drop_database() -> None:
    psql(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")


def database(kind: str, tmp: Path) -> str:
    """A fresh database for this run; a PostgreSQL one is dropped when the run ends."""
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'bench.db'}"
    drop_database()
    psql(f"CREATE DATABASE {PG_NAME}")
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_NAME}"


def hammer(url: str, seconds: float, clients: int) -> tuple[float, int]:
    """Requests per second posting the spec for `seconds` with `clients` connections, and how many.

    wrk (Debian's `wrk`) when installed: a load generator in C leaves the CPU to the servers.
    Otherwise Python threads, which on 2 cores cap the faster server and flatter the ratio.
    """
    if shutil.which("wrk"):
        return wrk(url, seconds, clients)
    return hammer_threads(url, seconds, clients)


def wrk(url: str, seconds: float, clients: int) -> tuple[float, int]:
    body = json.dumps(SPEC).replace("'", "\\'")
    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text(
        f"wrk.method = 'POST'\nwrk.headers['Content-Type'] = 'application/json'\nwrk.body = '{body}'\n"
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "-s", str(script), f"{url}/v1/jobs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rate, int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]


def hammer_threads(url: str, seconds: float, clients: int) -> tuple[float, int]:
    """Requests per second from `clients` threads posting the spec for `seconds`."""
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        with httpx.Client() as c:
            while time.monotonic() < stop:
                r = c.post(f"{url}/v1/jobs", json=SPEC)
                assert r.status_code == 201, r.text
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - t0), sum(counts)


def check_delivery(api: str, broker: str, answered: int) -> tuple[int, int]:
    """Every answered submit was stored and its message is in the broker's queue (no worker yet)."""
    import redis

    stored = httpx.get(f"{api}/v1/jobs", params={"limit": 1}).json()["count"]
    r = redis.Redis.from_url(broker)
    deadline = time.monotonic() + 10
    while (sent := int(r.llen("default"))) < stored and time.monotonic() < deadline:
        time.sleep(0.1)
    if stored < answered or sent != stored:
        raise SystemExit(f"lost submissions: {answered} answered 201, {stored} stored, {sent} sent")
    return stored, sent


def overhead(url: str, jobs: int) -> tuple[list[float], list[float]]:
    """Per job: finished_at − created_at − user time (server clock), and client-observed latency."""
    spec = {**SPEC, "queue": "bench"}  # its own queue: the submit-rate backlog waits elsewhere
    server, client = [], []
    with httpx.Client(base_url=url) as c:
        for _ in range(jobs):
            t0 = time.monotonic()
            job = c.post("/v1/jobs", json=spec).json()
            while not Status((j := c.get(f"/v1/jobs/{job['id']}").json())["status"]).is_final:
                time.sleep(0.002)
            seen = time.monotonic() - t0
            assert j["status"] == "SUCCEEDED", j["error"]
            user_s = float(j["timing"]["user_s"])
            span = datetime.fromisoformat(j["finished_at"]) - datetime.fromisoformat(j["created_at"])
            server.append(span.total_seconds() - user_s)
            client.append(seen - user_s)
    return server, client


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each submit run")
    ap.add_argument("--clients", type=int, default=8, help="concurrent submitting clients")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved submit runs; medians reported")
    ap.add_argument("--jobs", type=int, default=30, help="trivial jobs for the overhead measurement")
    ap.add_argument("--workers", type=int, default=1, help="processes of each server (API and bare app)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="reprotrain-bench-"))
    procs = Procs()
    try:
        redis_port = free_port()
        procs.start(
            [
                "redis-server",
                "--port",
                str(redis_port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp),
            ],
            dict(os.environ),
        )
        api_port, bare_port = free_port(), free_port()
        env = {
            **os.environ,
            "REPROTRAIN_DATA_DIR": str(tmp / "data"),
            "REPROTRAIN_DATABASE_URL": database(args.db, tmp),
            "REPROTRAIN_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
            "REPROTRAIN_PORT": str(api_port),
            "REPROTRAIN_ACCESS_LOG": "false",  # as the bare endpoint, which runs at log level warning
        }
        subprocess.run(
            [sys.executable, "-m", "reprotrain.cli", "db", "upgrade"],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        api = f"http://127.0.0.1:{api_port}"
        bare = f"http://127.0.0.1:{bare_port}"
        n = str(args.workers)
        api_proc = procs.start([sys.executable, "-m", "reprotrain.cli", "api", "--workers", n], env)
        bare_argv = [sys.executable, "-m", "bench.bare_app", "--port", str(bare_port), "--workers", n]
        bare_proc = procs.start(bare_argv, env)
        wait_http(f"{api}/readyz")
        wait_http(f"{bare}/docs")
        settings = f": {durability()}" if args.db == "postgres" else ""
        bare_runs, api_runs, answered, bare_n = [], [], 0, 0
        cpu = {"bare": 0.0, "api": 0.0, "postgres": 0.0, "redis": 0.0}
        for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both alike
            c0 = cpu_s(tree(bare_proc.pid))
            rate, n = hammer(bare, args.seconds, args.clients)
            cpu["bare"] += cpu_s(tree(bare_proc.pid)) - c0
            bare_runs.append(rate)
            bare_n += n
            before = [cpu_s(tree(api_proc.pid)), cpu_s(named("postgres")), cpu_s(named("redis-server"))]
            rate, n = hammer(api, args.seconds, args.clients)
            after = [cpu_s(tree(api_proc.pid)), cpu_s(named("postgres")), cpu_s(named("redis-server"))]
            for key, b, a in zip(("api", "postgres", "redis"), before, after, strict=True):
                cpu[key] += a - b
            api_runs.append(rate)
            answered += n
        bare_rate, api_rate = statistics.median(bare_runs), statistics.median(api_runs)
        stored, sent = check_delivery(api, env["REPROTRAIN_BROKER_URL"], answered)
        procs.start([sys.executable, "-m", "reprotrain.cli", "worker", "--queues", "bench"], env)
        overhead(api, 3)  # warm: fork server started, imports done
        server, client = overhead(api, args.jobs)
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if args.db == "postgres":
            drop_database()
    gen = "wrk" if shutil.which("wrk") else "Python threads (install wrk for a lighter load generator)"
    print(
        f"service benchmarks ({args.db}{settings}; Redis broker, {args.workers} process(es) per server, "
        f"{args.clients} connections, {os.cpu_count()} cores,"
        f" load from {gen})\n"
    )
    print("| submit endpoint                          | requests/s |")
    print("|------------------------------------------|------------|")
    runs = lambda xs: " ".join(f"{x:.0f}" for x in xs)  # noqa: E731
    print(f"| bare FastAPI, same validation            | {bare_rate:>10.0f} |  runs: {runs(bare_runs)}")
    print(f"| reprotrain POST /v1/jobs (store+enqueue) | {api_rate:>10.0f} |  runs: {runs(api_runs)}")
    print(f"\nratio of medians: {api_rate / bare_rate:.2f} of the bare endpoint")
    print(f"checked: {answered} submits answered, {stored} jobs stored, {sent} messages in the broker\n")
    per = {k: 1000 * v / (bare_n if k == "bare" else answered) for k, v in cpu.items()}
    print("| CPU per request (ms, user+system)        | bare | API | database | Redis | all |")
    print("|------------------------------------------|------|-----|----------|-------|-----|")
    db = per["postgres"] if args.db == "postgres" else 0.0  # SQLite runs inside the API process
    b = per["bare"]
    print(f"| bare FastAPI                             | {b:.2f} |     |          |       | {b:.2f} |")
    ours = per["api"] + db + per["redis"]
    print(
        f"| reprotrain submit                        |      | {per['api']:.2f} | "
        f"{db:.2f} | {per['redis']:.2f} | {ours:.2f} |"
    )
    print(
        f"(the servers share {os.cpu_count()} cores with the load generator: a submit's CPU, all parts "
        f"together, caps the rate at {1000 * (os.cpu_count() or 1) / ours:.0f}/s here)\n"
    )
    print("| end-to-end overhead, trivial job (ms)    |   p50 |   p90 |   max |")
    print("|------------------------------------------|-------|-------|-------|")
    for name, xs in (
        ("server clock: finished − created − user", server),
        ("client: submit → SUCCEEDED seen − user", client),
    ):
        print(
            f"| {name:<40} | {1000 * statistics.median(xs):5.0f} | {1000 * pct(xs, 0.9):5.0f} |"
            f" {1000 * max(xs):5.0f} |"
        )


if __name__ == "__main__":
    main()
