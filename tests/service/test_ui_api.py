"""What the web UI reads: the runs table's rows and filters (SQLite and PostgreSQL), the browser's
sign-in by an HttpOnly cookie with a CSRF header for changes, and the page shell's headers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from reprotrain.result import Result
from reprotrain.service.app import create_app
from reprotrain.settings import Settings
from reprotrain.spec import parse_spec
from reprotrain.status import Status
from reprotrain.store import Store
from reprotrain.store.migrate import upgrade
from reprotrain.verdict import Divergence, Verdict
from tests.helpers import base_spec, make_database


class Browser:
    """An httpx client on the in-process app that keeps cookies, as a browser does."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.cookies = httpx.Cookies()

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test", cookies=self.cookies
            ) as c:
                r = await c.request(method, path, **kw)
                self.cookies = c.cookies
                return r

        return asyncio.run(go())


def make_app(tmp_path: Path, db_url: str | None = None, **settings: Any) -> Any:
    s = Settings(data_dir=tmp_path, **({"database_url": db_url} if db_url else {}), **settings)  # type: ignore[arg-type]
    upgrade(s.db_url)
    return create_app(s, maintenance=False)


def seed(store: Store) -> dict[str, str]:
    """An original (tags a, b), its diverged re-run, an identical re-run, a failed job, a queued one."""
    ids: dict[str, str] = {}

    def done(
        spec: dict[str, Any], rerun_of: str | None, verdict: Verdict | None, status=Status.SUCCEEDED
    ) -> str:
        job = store.create_jobs([(parse_spec(spec), rerun_of)])[0]
        store.claim(job.id, "w", 30)
        result = Result(
            job_id=job.id,
            name=job.name,
            spec=job.spec,
            spec_digest=job.spec_digest,
            status=status,
            metrics={"loss": 0.5},
            timing={"user_s": 1.25},
        )
        if verdict is not None:
            verdict = verdict.model_copy(update={"b": job.id})
        assert store.finish(job.id, "w", status, result=result, error=None, artifacts=[], verdict=verdict)
        return job.id

    ids["orig"] = done(base_spec(name="resnet", tags=["a", "b_c"], seed=11), None, None)
    div = Verdict(a=ids["orig"], b="", verdict="diverged", divergence=Divergence(step=7))
    ids["div"] = done(base_spec(name="resnet", tags=["a", "b_c"], seed=11), ids["orig"], div)
    same = Verdict(a=ids["orig"], b="", verdict="identical")
    ids["same"] = done(base_spec(name="resnet", tags=["a", "b_c"], seed=11), ids["orig"], same)
    ids["failed"] = done(base_spec(name="mlp-x", tags=["bxc"]), None, None, Status.FAILED)
    ids["queued"] = store.create_jobs(
        [(parse_spec(base_spec(name="other", determinism={"policy": "off"}, seed=None)), None)]
    )[0].id
    return ids


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def runs_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Browser, dict[str, str]]]:
    """One seeded store per backend, read by every test of this module (none of them writes)."""
    tmp = tmp_path_factory.mktemp(f"runs-{request.param}")
    app = make_app(tmp, make_database(request.param, tmp, request))
    assert app.state.settings.db_url.startswith("postgresql" if request.param == "postgres" else "sqlite")
    ids = seed(app.state.store)
    yield Browser(app), ids
    app.state.store.close()


def test_runs_rows_carry_what_the_table_shows(runs_app: tuple[Browser, dict[str, str]]) -> None:
    client, ids = runs_app
    body = client.call("GET", "/v1/runs?limit=10").json()
    assert body["count"] == 5
    rows = {r["id"]: r for r in body["data"]}
    newest_first = ["queued", "failed", "same", "div", "orig"]
    assert [r["id"] for r in body["data"]] == [ids[k] for k in newest_first]
    div = rows[ids["div"]]
    assert div["tags"] == ["a", "b_c"] and div["seed"] == 11 and div["policy"] == "strict"
    assert div["verdict"] == "diverged" and div["diverged_at"] == 7 and div["rerun_of"] == ids["orig"]
    assert div["metrics"] == {"loss": 0.5} and div["duration_s"] >= 0
    assert rows[ids["same"]]["verdict"] == "identical" and rows[ids["same"]]["diverged_at"] is None
    q = rows[ids["queued"]]
    assert q["status"] == "QUEUED" and q["seed"] is None and q["policy"] == "off" and q["duration_s"] is None


@pytest.mark.parametrize(
    ("query", "expect"),
    [
        ("tag=a", {"orig", "div", "same"}),
        ("tag=b_c", {"orig", "div", "same"}),  # `_` is a tag character, not a LIKE wildcard
        ("tag=b", set()),  # a whole tag, not a part
        ("verdict=diverged", {"div"}),
        ("verdict=identical,diverged", {"div", "same"}),
        ("verdict=none", {"orig", "failed", "queued"}),
        ("status=failed", {"failed"}),
        ("search=esn", {"orig", "div", "same"}),
        ("search=x", {"failed"}),
        ("name=resnet&verdict=identical", {"same"}),
        ("tag=a&status=QUEUED", set()),
    ],
)
def test_runs_filters(runs_app: tuple[Browser, dict[str, str]], query: str, expect: set[str]) -> None:
    client, ids = runs_app
    body = client.call("GET", f"/v1/runs?{query}").json()
    assert {r["id"] for r in body["data"]} == {ids[k] for k in expect}
    assert body["count"] == len(expect)
    jobs = client.call("GET", f"/v1/jobs?{query}").json()  # the job list takes the same filters
    assert {r["id"] for r in jobs["data"]} == {ids[k] for k in expect}


def test_runs_search_by_id_prefix_and_paging(runs_app: tuple[Browser, dict[str, str]]) -> None:
    client, ids = runs_app
    body = client.call("GET", f"/v1/runs?search={ids['failed'][:10].upper()}").json()
    assert [r["id"] for r in body["data"]] == [ids["failed"]]
    first = client.call("GET", "/v1/runs?limit=2").json()
    second = client.call("GET", "/v1/runs?limit=2&offset=2").json()
    third = client.call("GET", "/v1/runs?limit=2&offset=4").json()
    seen = [r["id"] for page in (first, second, third) for r in page["data"]]
    assert len(seen) == 5 and set(seen) == set(ids.values())


@pytest.mark.parametrize("query", ["verdict=maybe", "status=DONE", "limit=0", "tag=" + "x" * 65, "offset=-1"])
def test_bad_filters_are_422_naming_the_field(runs_app: tuple[Browser, dict[str, str]], query: str) -> None:
    client, _ = runs_app
    r = client.call("GET", f"/v1/runs?{query}")
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"]


def test_spec_tags_are_checked_and_kept_out_of_old_digests() -> None:
    plain = parse_spec(base_spec())
    assert "tags" not in plain.canonical()
    tagged = parse_spec(base_spec(tags=["x", "x", "y"]))
    assert tagged.tags == ["x", "y"] and tagged.digest != plain.digest
    for bad in (["a,b"], [""], ["x" * 65], [f"t{i}" for i in range(17)]):
        with pytest.raises(Exception, match="tags"):
            parse_spec(base_spec(tags=bad))


# ---- sign-in ----------------------------------------------------------------------------------
@pytest.fixture
def token_app(tmp_path: Path) -> Iterator[Browser]:
    app = make_app(tmp_path, api_tokens=["s3cret"])
    app.state.store.create_jobs([(parse_spec(base_spec(name="secret-job")), None)])
    yield Browser(app)
    app.state.store.close()


def test_a_browser_signs_in_once_with_an_http_only_cookie(token_app: Browser) -> None:
    b = token_app
    assert b.call("GET", "/v1/session").json() == {"auth_required": True, "signed_in": False}
    assert b.call("GET", "/v1/runs").status_code == 401
    assert b.call("POST", "/v1/session", json={"token": "wrong"}).status_code == 401
    assert not b.cookies
    r = b.call("POST", "/v1/session", json={"token": "s3cret"})
    assert r.status_code == 204
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "max-age" not in cookie
    assert b.call("GET", "/v1/session").json()["signed_in"] is True
    runs = b.call("GET", "/v1/runs").json()
    assert [r["name"] for r in runs["data"]] == ["secret-job"]
    assert b.call("GET", "/static/vendor/uplot/uPlot.iife.min.js").status_code == 200  # scripts load too
    assert b.call("DELETE", "/v1/session").status_code == 204
    assert b.call("GET", "/v1/runs").status_code == 401


def test_a_change_on_the_cookie_alone_needs_the_ui_header(token_app: Browser) -> None:
    """A form posted from another site carries the cookie but cannot add a custom header."""
    b = token_app
    b.call("POST", "/v1/session", json={"token": "s3cret"})
    job = b.call("GET", "/v1/runs").json()["data"][0]["id"]
    r = b.call("POST", f"/v1/jobs/{job}/cancel")
    assert r.status_code == 401 and "x-reprotrain-ui" in r.json()["error"]["message"]
    assert b.call("GET", f"/v1/jobs/{job}").json()["cancel_requested"] is False
    r = b.call("POST", f"/v1/jobs/{job}/cancel", headers={"X-Reprotrain-UI": "1"})
    assert r.status_code == 202
    wrong = Browser(b.app)
    wrong.cookies.set("reprotrain_session", "guess")
    assert wrong.call("GET", "/v1/runs").status_code == 401


def test_the_page_shell_holds_no_data_and_loads_only_this_server(token_app: Browser) -> None:
    for path in ("/", "/jobs/abc", "/compare/a/b"):
        r = token_app.call("GET", path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "secret-job" not in r.text and "http://" not in r.text and "https://" not in r.text
    for name in ("app.js", "app.css", "favicon.svg"):
        assert token_app.call("GET", f"/ui/{name}").status_code == 200
    for name in ("index.html", "../app.py", "nope.js"):
        assert token_app.call("GET", f"/ui/{name}").status_code == 404


def test_migration_0003_backfills_verdict_kinds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url, "0002")
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(
            sa.text(
                "INSERT INTO jobs (id, name, status, queue, spec, spec_digest, created_at, attempts,"
                " cancel_requested, verdict) VALUES ('j1', 'n', 'SUCCEEDED', 'default', '{}', 'd',"
                " '2026-01-01 00:00:00', 1, 0, :v)"
            ),
            {"v": '{"a": "x", "b": "j1", "verdict": "metrics_identical"}'},
        )
    engine.dispose()
    upgrade(url)
    store = Store(url)
    rows, total = store.list_runs()
    assert total == 1 and rows[0].verdict_kind == "metrics_identical" and rows[0].tags is None
    store.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def params_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Browser, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp(f"params-{request.param}")
    app = make_app(tmp, make_database(request.param, tmp, request))
    ids = {}
    for key, project, params in [
        ("a", "vision", {"lr": 0.1, "optim": {"name": "adam"}, "warm": True}),
        ("b", "vision", {"lr": 0.01, "optim": {"name": "sgd"}, "warm": False}),
        ("c", "nlp", {"lr": 0.1, "optim": {"name": "adam"}, "layers": 3}),
        ("d", None, {"lr": "0.1"}),
    ]:
        spec = base_spec(params=params) | ({"project": project} if project else {})
        ids[key] = app.state.store.create_jobs([(parse_spec(spec), None)])[0].id
    yield Browser(app), ids
    app.state.store.close()


@pytest.mark.parametrize(
    ("query", "expect"),
    [
        ("project=vision", {"a", "b"}),
        ("param.lr=0.1", {"a", "c", "d"}),  # by value: the string "0.1" too, as a number
        ("param.lr=0.1&project=nlp", {"c"}),
        ("param.lr=0.01", {"b"}),
        ("param.optim.name=adam", {"a", "c"}),
        ("param.warm=true", {"a"}),
        ("param.warm=false", {"b"}),
        ("param.layers=3", {"c"}),
        ("param.nothing=1", set()),
    ],
)
def test_project_and_param_filters(
    params_app: tuple[Browser, dict[str, str]], query: str, expect: set[str]
) -> None:
    client, ids = params_app
    body = client.call("GET", f"/v1/runs?{query}").json()
    assert {r["id"] for r in body["data"]} == {ids[k] for k in expect}, body
    if expect:
        row = next(r for r in body["data"] if r["id"] == ids[sorted(expect)[0]])
        assert row["params"]["lr"] in (0.1, 0.01) and row["project"] in ("vision", "nlp")


@pytest.mark.parametrize("query", ["param.=1", "param.a..b=1", "param.$x=1"])
def test_bad_param_filters_are_request_invalid(
    params_app: tuple[Browser, dict[str, str]], query: str
) -> None:
    client, _ = params_app
    r = client.call("GET", f"/v1/runs?{query}")
    assert r.status_code == 422 and r.json()["error"]["code"] == "request_invalid", r.text
