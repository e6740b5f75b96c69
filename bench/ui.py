"""Web UI benchmarks: what the pages ask of the server with a large store.

1. runs table: GET /v1/runs (first page of 50, and filtered) with 100,000 jobs in the store,
   timed in the API process (ASGI, no network), SQLite and PostgreSQL;
2. chart series: GET /v1/jobs/{id}/series of a finished job whose trace has 100,000 steps
   (server-side downsampling) against returning the whole trace (GET /v1/jobs/{id}/trace).

    python -m bench.ui [--jobs 100000] [--steps 100000] [--db sqlite,postgres] [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, insert, text

from reprotrain.service.app import create_app
from reprotrain.settings import Settings
from reprotrain.spec import parse_spec
from reprotrain.store.migrate import upgrade
from reprotrain.store.tables import JobRow

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SPEC = parse_spec(
    {
        "name": "bench",
        "entrypoint": "reprotrain.examples.mlp:train",
        "params": {"epochs": 3, "lr": 0.01},
        "seed": 1,
        "determinism": {"policy": "strict"},
        "device": "cpu",
    }
)


def fill(db_url: str, jobs: int, steps_each: int = 50) -> str:
    """`jobs` finished jobs (a third of them re-runs with verdicts, tags on some), each result with
    a trace of `steps_each` steps; returns the id of one original."""
    rng = random.Random(1)
    engine = create_engine(db_url)
    t0 = datetime.now(UTC) - timedelta(days=30)
    trace = [{"step": s, "metrics": {"loss": 1 / (s + 1), "acc": s / steps_each}} for s in range(steps_each)]
    first = None
    batch: list[dict[str, Any]] = []
    originals: list[str] = []
    with engine.begin() as conn:
        for i in range(jobs):
            job_id = uuid.uuid4().hex
            rerun_of = rng.choice(originals) if originals and i % 3 == 2 else None
            kind = (
                rng.choice(["identical", "identical", "diverged", "metrics_identical"]) if rerun_of else None
            )
            created = t0 + timedelta(seconds=i * 20)
            batch.append(
                {
                    "id": job_id,
                    "name": f"exp-{i % 500}",
                    "status": "SUCCEEDED" if i % 17 else "FAILED",
                    "queue": "default",
                    "spec": SPEC.canonical(),
                    "spec_digest": SPEC.digest,
                    "rerun_of": rerun_of,
                    "created_at": created,
                    "sent_at": created,
                    "started_at": created + timedelta(seconds=1),
                    "finished_at": created + timedelta(seconds=12),
                    "attempts": 1,
                    "cancel_requested": False,
                    "metrics": {"loss": 0.01, "acc": 0.98},
                    "result": {"job_id": job_id, "trace": trace, "timing": {"user_s": 10.5}},
                    "verdict": {"a": rerun_of, "b": job_id, "verdict": kind, "divergence": {"step": 7}}
                    if kind
                    else None,
                    "verdict_kind": kind,
                    "tags": ",sweep,lr-0.01," if i % 10 == 0 else None,
                }
            )
            if rerun_of is None:
                originals.append(job_id)
                first = first or job_id
            if len(batch) == 2000:
                conn.execute(insert(JobRow), batch)
                batch = []
        if batch:
            conn.execute(insert(JobRow), batch)
        if engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE jobs"))
    engine.dispose()
    return first or ""


def long_trace_job(db_url: str, steps: int) -> str:
    """One finished job whose stored trace has `steps` steps of three metrics."""
    rng = random.Random(2)
    trace = [
        {
            "step": s,
            "metrics": {
                "loss": 2 * math.exp(-s / 20000) + rng.gauss(0, 0.05),
                "lr": 0.1 * 0.5 ** (s // 25000),
                "grad_norm": abs(rng.gauss(1, 0.3)),
            },
        }
        for s in range(steps)
    ]
    job_id = uuid.uuid4().hex
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            insert(JobRow),
            [
                {
                    "id": job_id,
                    "name": "long",
                    "status": "SUCCEEDED",
                    "queue": "default",
                    "spec": SPEC.canonical(),
                    "spec_digest": SPEC.digest,
                    "created_at": datetime.now(UTC),
                    "attempts": 1,
                    "cancel_requested": False,
                    "result": {"job_id": job_id, "trace": trace},
                }
            ],
        )
    engine.dispose()
    return job_id


def timed(app: Any, path: str, repeat: int) -> tuple[list[float], int]:
    """Milliseconds of `repeat` requests after a first one (which is the first element)."""

    async def go() -> tuple[list[float], int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
            t = time.perf_counter()
            r = await c.get(path)  # the first: query plans, caches (a finished trace parsed once)
            assert r.status_code == 200, r.text
            times = [(time.perf_counter() - t) * 1000]
            for _ in range(repeat):
                t = time.perf_counter()
                r = await c.get(path)
                times.append((time.perf_counter() - t) * 1000)
            return times, len(r.content)

    return asyncio.run(go())


def database(kind: str, tmp: Path) -> tuple[str, Any]:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'bench.db'}", lambda: None
    name = f"reprotrain_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", drop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--db", default="sqlite,postgres")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    console = Console()
    runs = Table(
        title=f"GET /v1/runs with {args.jobs:,} jobs (ms in the API process, {args.repeat} requests)"
    )
    for col in ("database", "request", "p50 ms", "p95 ms", "bytes"):
        runs.add_column(col, justify="right" if col != "request" and col != "database" else "left")
    series = Table(title=f"a finished job's trace of {args.steps:,} steps (3 metrics)")
    for col in ("database", "request", "first ms", "then p50 ms", "points", "bytes"):
        series.add_column(col, justify="right" if col not in ("database", "request") else "left")
    for kind in args.db.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            url, drop = database(kind, Path(tmp))
            try:
                upgrade(url)
                t = time.perf_counter()
                fill(url, args.jobs)
                console.print(f"[dim]{kind}: {args.jobs:,} jobs stored in {time.perf_counter() - t:.0f} s[/]")
                long_id = long_trace_job(url, args.steps)
                app = create_app(Settings(data_dir=Path(tmp), database_url=url), maintenance=False)
                for label, path in [
                    ("first page", "/v1/runs?limit=50"),
                    ("page 100", "/v1/runs?limit=50&offset=4950"),
                    ("status=FAILED", "/v1/runs?limit=50&status=FAILED"),
                    ("tag=sweep", "/v1/runs?limit=50&tag=sweep"),
                    ("verdict=diverged", "/v1/runs?limit=50&verdict=diverged"),
                    ("search=exp-42", "/v1/runs?limit=50&search=exp-42"),
                    ("GET /v1/jobs (full rows)", "/v1/jobs?limit=50"),
                ]:
                    times, size = timed(app, path, args.repeat)
                    times = times[1:]
                    runs.add_row(
                        kind, label, f"{statistics.median(times):.1f}", f"{_p95(times):.1f}", f"{size:,}"
                    )
                for label, path in [
                    ("series, 2,000 points", f"/v1/jobs/{long_id}/series?points=2000"),
                    ("series, zoomed to 1,000 steps", f"/v1/jobs/{long_id}/series?start=50000&end=50999"),
                    ("whole trace (/trace)", f"/v1/jobs/{long_id}/trace"),
                ]:
                    times, size = timed(app, path, max(3, args.repeat // 4))
                    points = "—"
                    if "series" in path:
                        points = f"{len(json.loads(_get(app, path))['steps']):,}"
                    first, p50 = f"{times[0]:.1f}", f"{statistics.median(times[1:]):.1f}"
                    series.add_row(kind, label, first, p50, points, f"{size:,}")
                app.state.store.close()
            finally:
                drop()
    console.print(runs)
    console.print(series)


def _get(app: Any, path: str) -> bytes:
    async def go() -> bytes:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
            return (await c.get(path)).content

    return asyncio.run(go())


def _p95(times: list[float]) -> float:
    return sorted(times)[max(0, math.ceil(len(times) * 0.95) - 1)]


if __name__ == "__main__":
    main()
