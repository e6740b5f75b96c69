"""Job ids in the API: a unique prefix of 6+ characters names a job in every /v1/jobs/{id} route;
a shorter or ambiguous one is a clear error; a bad query parameter is `request_invalid`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from reprotrain.spec import parse_spec
from reprotrain.store.tables import JobRow
from tests.helpers import base_spec
from tests.service.test_ui_api import Browser, make_app

IDS = ["abcdef0123" + "0" * 22, "abcdef0199" + "1" * 22, "abcdef7777" + "2" * 22]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Browser]:
    a = make_app(tmp_path)
    spec = parse_spec(base_spec())
    rows: list[dict[str, Any]] = [
        {
            "id": i,
            "name": f"job-{n}",
            "status": "QUEUED",
            "queue": "default",
            "spec": spec.canonical(),
            "spec_digest": spec.digest,
            "created_at": datetime.now(UTC),
            "attempts": 0,
            "cancel_requested": False,
        }
        for n, i in enumerate(IDS)
    ]
    with a.state.store.session() as s:
        s.execute(insert(JobRow), rows)
    yield Browser(a)
    a.state.store.close()


@pytest.mark.parametrize(
    "path", ["/v1/jobs/{}", "/v1/jobs/{}/artifacts", "/v1/jobs/{}/trace", "/v1/jobs/{}/series"]
)
def test_a_unique_prefix_names_the_job(app: Browser, path: str) -> None:
    r = app.call("GET", path.format("abcdef77"))
    assert r.status_code == 200, r.text
    if path == "/v1/jobs/{}":
        assert r.json()["id"] == IDS[2]
    assert app.call("GET", path.format("ABCDEF77")).status_code == 200  # as typed, any case


def test_cancel_and_compare_take_prefixes_too(app: Browser) -> None:
    r = app.call("POST", "/v1/jobs/abcdef012/cancel")
    assert r.status_code == 202 and r.json() == {"id": IDS[0], "status": "CANCELED"}
    r = app.call("GET", "/v1/jobs/abcdef012/compare/abcdef019")
    assert r.status_code == 200 and r.json()["a"] == IDS[0] and r.json()["b"] == IDS[1]


def test_an_ambiguous_prefix_lists_the_jobs_it_could_be(app: Browser) -> None:
    r = app.call("GET", "/v1/jobs/abcdef01")
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "ambiguous_id" and err["field"] == "job_id"
    assert IDS[0] in err["message"] and IDS[1] in err["message"] and IDS[2] not in err["message"]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("abcde", "a prefix needs 6 characters"),
        ("abcdeg", "no job with id 'abcdeg'"),
        ("ffffff", "no job with id"),
    ],
)
def test_short_foreign_or_unknown_prefixes_are_404(app: Browser, ref: str, message: str) -> None:
    r = app.call("GET", f"/v1/jobs/{ref}")
    assert r.status_code == 404 and message in r.json()["error"]["message"]


def test_without_a_token_a_prefix_says_nothing_of_which_jobs_exist(tmp_path: Path) -> None:
    a = make_app(tmp_path, api_tokens=["t"])
    for ref in ("abcdef", "000000", "abcdef0123" + "0" * 22):
        r = Browser(a).call("GET", f"/v1/jobs/{ref}")
        assert r.status_code == 401, (ref, r.text)
    a.state.store.close()


@pytest.mark.parametrize("query", ["status=DONE", "verdict=maybe", "limit=0"])
def test_a_bad_query_parameter_is_request_invalid(app: Browser, query: str) -> None:
    r = app.call("GET", f"/v1/jobs?{query}")
    assert r.status_code == 422 and r.json()["error"]["code"] == "request_invalid"
