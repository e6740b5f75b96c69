"""Container health checks (installed as /usr/local/bin/reprotrain-healthcheck in both images).

    reprotrain-healthcheck api      GET http://127.0.0.1:$REPROTRAIN_PORT/healthz answers 200
    reprotrain-healthcheck worker   the worker (PID 1) is alive, the database and broker answer, and
                                    its last job launch worked (its fork server starts)

A Celery `inspect ping` is deliberately not used for the worker: it runs a solo pool, so a worker
busy with a long job would not answer and would be reported unhealthy while working correctly.
Exit status 0 = healthy, 1 = unhealthy (what Docker's HEALTHCHECK expects).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path


def check_api() -> None:
    port = os.environ.get("REPROTRAIN_PORT", "8000")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        if r.status != 200:
            raise RuntimeError(f"/healthz answered {r.status}")


def check_worker() -> None:
    cmdline = Path("/proc/1/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    if "worker" not in cmdline:
        raise RuntimeError(f"PID 1 is not the worker: {cmdline!r}")
    from kombu import Connection
    from sqlalchemy import create_engine, text

    from reprotrain.settings import load_settings

    settings = load_settings()
    engine = create_engine(settings.db_url, pool_pre_ping=False)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    if not settings.broker.startswith("filesystem"):
        with Connection(settings.broker, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1)
    check_launch(settings.jobs)


def check_launch(jobs_dir: Path) -> None:
    """Unhealthy while the worker's last launch failed (its fork server would not start)."""
    from reprotrain.wire import LAUNCH_HEALTH

    try:
        state = json.loads((jobs_dir / LAUNCH_HEALTH).read_text())
    except FileNotFoundError:
        return  # no job launched yet
    if not state.get("ok"):
        raise RuntimeError(f"cannot launch jobs: {state.get('error')}")


def main(argv: list[str]) -> int:
    checks = {"api": check_api, "worker": check_worker}
    if len(argv) != 1 or argv[0] not in checks:
        print("usage: reprotrain-healthcheck api|worker", file=sys.stderr)
        return 2
    try:
        checks[argv[0]]()
    except Exception as e:  # noqa: BLE001 - any failure is "unhealthy", with its reason
        print(f"unhealthy: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
