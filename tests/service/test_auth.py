"""Bearer tokens: required when configured and always beyond loopback; 401 in the error shape."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reprotrain.errors import ReprotrainError
from reprotrain.service.app import create_app
from reprotrain.settings import Settings
from reprotrain.store.migrate import upgrade


class AppClient:
    """Calls an in-process app through httpx's ASGI transport (no sockets)."""

    def __init__(self, app) -> None:
        self.app = app

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.get(path, headers=headers or {})

        return asyncio.run(go())


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[AppClient]:
    settings = Settings(data_dir=tmp_path, api_tokens=["s3cret", "other"], metrics_token="scrape")  # type: ignore[arg-type]
    upgrade(settings.db_url)
    app = create_app(settings, maintenance=False)
    yield AppClient(app)
    app.state.store.close()


def test_missing_and_wrong_tokens_are_401(app_client: AppClient) -> None:
    """Without a token, or with a wrong one, every v1 route answers 401 with WWW-Authenticate."""
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic s3cret"}):
        r = app_client.get("/v1/jobs", headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == "unauthorized"


def test_valid_token_is_accepted_and_probes_stay_open(app_client: AppClient) -> None:
    """Any configured token works; health probes need none, and readiness names no internals."""
    for token in ("s3cret", "other"):
        assert app_client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert app_client.get("/healthz").status_code == 200
    ready = app_client.get("/readyz")
    assert ready.status_code in (200, 503)
    assert set(ready.json()["checks"].values()) <= {"ok", "failed"}  # never an exception's name


@pytest.mark.parametrize(
    "path", ["/metrics", "/docs", "/redoc", "/openapi.json", "/static/vendor/redoc/redoc.standalone.js"]
)
def test_everything_but_liveness_needs_a_token(app_client: AppClient, path: str) -> None:
    """With tokens set, metrics, docs, their assets and the schema answer 401 without one and 200
    with one."""
    assert app_client.get(path).status_code == 401
    assert app_client.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_the_scrape_token_opens_metrics_only(app_client: AppClient) -> None:
    """The metrics token reads /metrics and nothing else."""
    scrape = {"Authorization": "Bearer scrape"}
    assert app_client.get("/metrics", headers=scrape).status_code == 200
    assert app_client.get("/v1/jobs", headers=scrape).status_code == 401
    assert app_client.get("/openapi.json", headers=scrape).status_code == 401


def test_beyond_loopback_without_tokens_refuses_to_start(tmp_path: Path) -> None:
    """Listening on 0.0.0.0 with no tokens configured is refused at startup."""
    with pytest.raises(ReprotrainError, match="REPROTRAIN_API_TOKENS"):
        create_app(Settings(data_dir=tmp_path, host="0.0.0.0"), maintenance=False)
    assert Settings(host="0.0.0.0", api_tokens=["x"]).auth_required  # type: ignore[list-item]
    assert not Settings(host="127.0.0.1").auth_required
