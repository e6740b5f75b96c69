"""Shared fixtures: a scrubbed environment, one fork server per session, a job factory, and real
servers (redis-server, PostgreSQL, a stack on each database) for the service and security tests.

Where redis-server or PostgreSQL cannot be reached the affected tests skip with the reason,
except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    PG_ADMIN,
    ROOT,
    RedisServer,
    Stack,
    free_port,
    make_database,
    spawn_redis,
    start_stack,
    unavailable,
)


@pytest.fixture(autouse=True)
def _scrub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No REPROTRAIN_* variable from the caller's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("REPROTRAIN_"):
            monkeypatch.delenv(key)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    """A real store on a fresh SQLite database, migrated to the latest schema."""
    from reprotrain.store import Store
    from reprotrain.store.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    s = Store(url)
    yield s
    s.close()


@pytest.fixture(scope="session")
def fork_runner() -> Iterator[Any]:
    from reprotrain.job.launcher import ForkRunner

    with ForkRunner() as runner:
        yield runner


@pytest.fixture
def run_job(fork_runner: Any, tmp_path: Path) -> Callable[..., Any]:
    """Run a spec dict through the real fork runner; returns (result, job_dir)."""
    from reprotrain.job.supervisor import execute
    from reprotrain.spec import parse_spec

    def run(
        spec: dict[str, Any], *, runner: Any = None, code_dir: Path = ROOT, **kw: Any
    ) -> tuple[Any, Path]:
        job_dir = tmp_path / f"job-{uuid.uuid4().hex[:8]}"
        result = execute(
            runner or fork_runner,
            parse_spec(spec),
            job_dir,
            code_dir=code_dir,
            input_cache=tmp_path / "digest-cache.sqlite",
            **kw,
        )
        return result, job_dir

    return run


# real servers: redis-server, PostgreSQL, and a whole stack on each database


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Our own redis-server on a free port (never the machine's shared one)."""
    port = free_port()
    proc = spawn_redis(port, tmp_path_factory.mktemp("redis"))
    yield RedisServer(port, proc)
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Any]:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as e:  # noqa: BLE001 - any failure to connect means: no PostgreSQL here
        unavailable(f"PostgreSQL not reachable at {PG_ADMIN}: {type(e).__name__}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(
    request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """API + one Celery worker on a real Redis, once with SQLite and once with PostgreSQL."""
    tmp = tmp_path_factory.mktemp(f"stack-{request.param}")
    s = start_stack(tmp, make_database(request.param, tmp, request), redis_server.url())
    yield s
    s.stop()
