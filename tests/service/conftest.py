"""Real servers for service tests: redis-server and PostgreSQL, and a stack on each database.

Where redis-server or PostgreSQL cannot be reached the affected tests skip with the reason,
except under CI=true, where they fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import (
    PG_ADMIN,
    RedisServer,
    Stack,
    free_port,
    make_database,
    spawn_redis,
    start_stack,
    unavailable,
)


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
