"""What a job's JSON columns hold reads back as it was written, on SQLite and on a real
PostgreSQL: the params a job is given, its spec's digest, the order of a step's tensors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from reprotrain.result import ParamDigest, Result
from reprotrain.service.writer import LoopWriter
from reprotrain.spec import parse_spec
from reprotrain.status import Status
from reprotrain.store import Store
from reprotrain.store.migrate import upgrade
from tests.helpers import base_spec, make_database

# values a normalising store rewrites: a float without a fraction (jsonb: the int 10**20), a
# negative zero (jsonb: 0.0), keys not in length order (jsonb: shortest first), a subnormal
PARAMS = {"lr": 1e-3, "scale": 1e20, "shift": -0.0, "tiny": 5e-324, "big": 10**30, "zz": 1, "a": [2.0, -0.0]}
# a step's tensors in the model's own order, which is not the keys' length or byte order
TENSORS = {"10.weight": "x" * 32, "2.bias": "y" * 32, "0.weight": "z" * 32, "0.bias": "w" * 32}


class Dispatched:
    def submit(self, jobs: list[tuple[str, str]]) -> None:
        pass


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    url = make_database(request.param, tmp_path, request)
    upgrade(url)
    s = Store(url)
    yield url, s
    s.close()


def as_written(value: Any) -> str:
    """The JSON text of a value: equal only if every number, its type and every key order are."""
    return json.dumps(value)


def test_a_spec_reads_back_as_it_was_sent_and_keeps_its_digest(store: Any) -> None:
    url, s = store
    spec = parse_spec(base_spec(params=PARAMS))
    ids = [s.create_job(spec).id]
    if url.startswith("postgresql"):  # the submit path there: the loop writer's own INSERT

        async def submit() -> str:
            w = LoopWriter(s, Dispatched(), url)  # type: ignore[arg-type]
            job = await w.create(spec)
            await w.aclose()
            return job.id

        ids.append(asyncio.run(submit()))
    for job_id in ids:
        row = s.get_job(job_id)
        assert as_written(row.spec["params"]) == as_written(PARAMS)
        assert parse_spec(row.spec).digest == row.spec_digest == spec.digest


def test_a_result_keeps_the_order_of_a_step_s_tensors(store: Any) -> None:
    """The verdict names the first differing tensor in the model's order: the stored order."""
    _, s = store
    job = s.create_job(parse_spec(base_spec(params=PARAMS)))
    assert s.claim(job.id, "w", 30)
    digests = [ParamDigest(step=0, overall="o" * 32, tensors=TENSORS)]
    result = Result(
        job_id=job.id, name=job.name, spec=job.spec, spec_digest=job.spec_digest,
        status=Status.SUCCEEDED, metrics={"loss": -0.0, "big": 1e20}, param_digests=digests,
    )  # fmt: skip
    assert s.finish(job.id, "w", Status.SUCCEEDED, result=result, error=None, artifacts=[])
    row = s.get_job(job.id)
    assert list(row.result["param_digests"][0]["tensors"]) == list(TENSORS)
    assert as_written(row.metrics) == as_written({"loss": -0.0, "big": 1e20})
    assert as_written(row.result["spec"]["params"]) == as_written(PARAMS)


def test_postgres_columns_are_json_not_jsonb(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """After the migrations no column is jsonb (which rewrites what it stores), and a job stored
    before them reads back as jsonb had kept it."""
    url = make_database("postgres", tmp_path, request)
    upgrade(url, "0006")
    s = Store(url)
    old = s.create_job(parse_spec(base_spec(params={"lr": 0.5, "n": [1, 2]})))
    s.close()
    upgrade(url)
    s = Store(url)
    try:
        with s.session() as session:
            kinds = dict(
                session.execute(
                    text(
                        "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
                        " WHERE table_schema = 'public' AND data_type IN ('json', 'jsonb')"
                    )
                ).all()
            )
        row = s.get_job(old.id)
        assert row.spec["params"] == {"lr": 0.5, "n": [1, 2]} and row.spec_digest == old.spec_digest
    finally:
        s.close()
    assert kinds["jobs.spec"] == "json" and kinds["workers.facts"] == "json"
    assert set(kinds.values()) == {"json"}, kinds
