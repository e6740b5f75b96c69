"""The PostgreSQL writer (`LoopWriter`) on a real server: group commit on the event loop, each
caller its own committed job, a dropped connection survived, one refused row failing alone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from reprotrain.errors import SpecInvalid
from reprotrain.service.writer import LoopWriter, make_writer
from reprotrain.spec import parse_spec
from reprotrain.store import Store
from reprotrain.store.migrate import upgrade
from tests.helpers import base_spec, make_database


class RecordingDispatch:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def submit(self, jobs: list[tuple[str, str]]) -> None:
        self.sent.extend(jobs)


class CountingWriter(LoopWriter):
    """Counts its inserts; refuses, as the database refuses a value, any burst with a job named
    'poison'."""

    inserts: list[int]

    async def _insert(self, jobs):  # type: ignore[no-untyped-def]
        self.inserts.append(len(jobs))
        if any(j.name == "poison" for j in jobs):
            raise psycopg.DataError("refused by the database")
        await super()._insert(jobs)


@pytest.fixture
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    url = make_database("postgres", tmp_path, request)
    upgrade(url)
    store = Store(url)
    yield url, store
    store.close()


def writer_for(url: str, store: Store) -> tuple[CountingWriter, RecordingDispatch]:
    dispatch = RecordingDispatch()
    w = CountingWriter(store, dispatch, url)  # type: ignore[arg-type]
    w.inserts = []
    return w, dispatch


def test_postgres_gets_the_loop_writer(db: Any) -> None:
    url, store = db
    assert isinstance(make_writer(store, RecordingDispatch(), url), LoopWriter)  # type: ignore[arg-type]
    assert not isinstance(make_writer(store, RecordingDispatch(), "sqlite:///x.db"), LoopWriter)  # type: ignore[arg-type]


def test_concurrent_creates_are_each_committed_in_fewer_inserts(db: Any) -> None:
    url, store = db
    writer, dispatch = writer_for(url, store)
    spec = parse_spec(base_spec(queue="gpu"))

    async def burst() -> list[str]:
        rows = await asyncio.gather(*(writer.create(spec) for _ in range(50)))
        await writer.aclose()
        return [r.id for r in rows]

    ids = asyncio.run(burst())
    assert len(set(ids)) == 50
    assert sorted(i for i, _ in dispatch.sent) == sorted(ids)
    assert {q for _, q in dispatch.sent} == {"gpu"}
    assert store.existing(ids) == set(ids)
    assert all(store.get_job(i).status == "QUEUED" for i in ids[:5])
    assert sum(writer.inserts) == 50 and len(writer.inserts) < 50


def test_a_dropped_connection_is_reopened_and_nothing_stored_twice(
    db: Any, request: pytest.FixtureRequest
) -> None:
    """PostgreSQL drops every connection (as on a restart): the next job, alone in its burst, is
    stored on a new connection, once, and so are the bursts after it."""
    url, store = db
    writer, dispatch = writer_for(url, store)
    admin = request.getfixturevalue("postgres_admin")

    def drop() -> None:
        with admin.connect() as c:
            killed = c.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": url.rsplit("/", 1)[1]},
            ).all()
        assert killed, "no connection to drop"

    async def run() -> tuple[str, list[str]]:
        first = await writer.create(parse_spec(base_spec(name="before")))
        drop()
        alone = await writer.create(parse_spec(base_spec(name="alone")))
        drop()
        specs = [parse_spec(base_spec(name=f"after-{i}")) for i in range(3)]
        rows = await asyncio.gather(*(writer.create(s) for s in specs))
        await writer.aclose()
        return first.id, [alone.id, *(r.id for r in rows)]

    first, after = asyncio.run(run())
    assert store.existing([first, *after]) == {first, *after}
    assert store.list_jobs(limit=10)[1] == 5
    assert len(dispatch.sent) == 5


def test_one_refused_row_fails_alone_not_its_burst(db: Any) -> None:
    """Refused rows among good concurrent creates: the good are stored and dispatched, each refused
    one gets a 422-kind error naming the database's refusal."""
    url, store = db
    writer, dispatch = writer_for(url, store)
    good, bad = parse_spec(base_spec(name="good")), parse_spec(base_spec(name="poison"))

    async def burst() -> list[object]:
        specs = [bad if i % 9 == 0 else good for i in range(60)]
        out = await asyncio.gather(*(writer.create(s) for s in specs), return_exceptions=True)
        await writer.aclose()
        return out

    outcomes = asyncio.run(burst())
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    stored = [o.id for o in outcomes if not isinstance(o, BaseException)]  # type: ignore[attr-defined]
    assert len(failed) == 7 and all(isinstance(e, SpecInvalid) for e in failed)
    assert "DataError" in str(failed[0])
    assert len(stored) == 53 and store.existing(stored) == set(stored)
    assert sorted(i for i, _ in dispatch.sent) == sorted(stored)
    assert store.list_jobs(limit=100)[1] == 53


def test_a_writer_serves_a_second_event_loop(db: Any) -> None:
    """The app may be served by one event loop and then another (a test client opened twice): the
    writer's next burst starts in the loop that awaits it, on the same connection."""
    url, store = db
    writer, dispatch = writer_for(url, store)
    first = asyncio.run(writer.create(parse_spec(base_spec(name="one"))))  # no aclose: left open
    second = asyncio.run(writer.create(parse_spec(base_spec(name="two"))))
    asyncio.run(writer.aclose())
    assert store.existing([first.id, second.id]) == {first.id, second.id}
    assert [i for i, _ in dispatch.sent] == [first.id, second.id]


def test_a_database_away_fails_the_whole_burst_at_once(db: Any, request: pytest.FixtureRequest) -> None:
    """PostgreSQL refusing connections: every create of a burst gets the unavailability (503) from
    one attempt, not one attempt per row under new ids; once it is back, the next burst is stored."""
    url, store = db
    writer, dispatch = writer_for(url, store)
    admin = request.getfixturevalue("postgres_admin")
    name = url.rsplit("/", 1)[1]

    def allow(yes: bool) -> None:
        with admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(yes).lower()}'))

    async def burst(n: int) -> list[object]:
        specs = [parse_spec(base_spec(name=f"job-{i}")) for i in range(n)]
        return await asyncio.gather(*(writer.create(s) for s in specs), return_exceptions=True)

    allow(False)
    try:
        away = asyncio.run(burst(20))
    finally:
        allow(True)
    assert all(isinstance(o, psycopg.OperationalError) for o in away), away
    assert sum(writer.inserts) == 20 and len(writer.inserts) < 20  # bursts, never row by row
    back = asyncio.run(burst(5))
    asyncio.run(writer.aclose())
    assert store.list_jobs(limit=50)[1] == 5 and len(dispatch.sent) == 5
    assert store.existing([o.id for o in back]) == {o.id for o in back}  # type: ignore[attr-defined]


def test_an_insert_that_hangs_fails_its_burst_in_bounded_time(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The jobs table locked by another session (a migration, a stuck transaction): the burst's
    insert is given up after the timeout, once more on a new connection, then every create of it
    gets the unavailability (503); nothing of it is stored, and once the lock goes the next burst is."""
    from sqlalchemy import create_engine

    from reprotrain.service import writer as writer_module

    monkeypatch.setattr(writer_module, "INSERT_TIMEOUT", 0.5)
    url, store = db
    writer, dispatch = writer_for(url, store)
    asyncio.run(writer.create(parse_spec(base_spec(name="before"))))  # the connection is open
    locker = create_engine(url)

    async def burst(n: int) -> list[object]:
        specs = [parse_spec(base_spec(name=f"job-{i}")) for i in range(n)]
        return await asyncio.gather(*(writer.create(s) for s in specs), return_exceptions=True)

    try:
        with locker.connect() as c, c.begin():
            c.execute(text("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"))
            hung = asyncio.run(burst(8))
    finally:
        locker.dispose()
    assert all(isinstance(o, psycopg.OperationalError) for o in hung), hung
    assert "within 0.5 s" in str(hung[0])
    assert writer.inserts[1:] == [8]  # one burst, never row by row
    assert store.list_jobs(limit=50)[1] == 1 and len(dispatch.sent) == 1
    back = asyncio.run(burst(3))
    asyncio.run(writer.aclose())
    assert store.existing([o.id for o in back]) == {o.id for o in back}  # type: ignore[attr-defined]
    assert store.list_jobs(limit=50)[1] == 4 and len(dispatch.sent) == 4


def test_the_writer_s_connection_has_keepalives_unless_the_url_says_otherwise(db: Any) -> None:
    from psycopg.conninfo import conninfo_to_dict

    url, store = db
    mine = conninfo_to_dict(LoopWriter(store, RecordingDispatch(), url).conninfo)  # type: ignore[arg-type]
    assert mine["keepalives"] == "1" and mine["keepalives_idle"] == "10"
    assert mine["dbname"] == url.rsplit("/", 1)[1]
    theirs = conninfo_to_dict(
        LoopWriter(store, RecordingDispatch(), url + "?keepalives_idle=60").conninfo  # type: ignore[arg-type]
    )
    assert theirs["keepalives_idle"] == "60" and theirs["keepalives_count"] == "3"


def test_the_connection_string_is_the_engine_s_reading_of_the_url() -> None:
    """Passwords, options with spaces and several hosts reach libpq as SQLAlchemy's engine reads
    them (the URL's own text would give libpq `+` for a space, and no second host)."""
    from psycopg.conninfo import conninfo_to_dict

    from reprotrain.service.writer import conninfo

    got = conninfo_to_dict(
        conninfo(
            "postgresql+psycopg://u:p%40ss%2Fw@h:5/db?options=-c%20statement_timeout%3D5000"
            "&application_name=my%20app"
        )
    )
    assert got == {
        "host": "h",
        "port": "5",
        "dbname": "db",
        "user": "u",
        "password": "p@ss/w",
        "options": "-c statement_timeout=5000",
        "application_name": "my app",
    }
    several = conninfo_to_dict(conninfo("postgresql+psycopg://u@/db?host=h1:5432&host=h2:5433"))
    assert several["host"] == "h1,h2" and several["port"] == "5432,5433"
