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
    settings = Settings(data_dir=tmp_path, api_tokens=["s3cret", "other"])  # type: ignore[list-item]
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
    """Any configured token works; health probes need none."""
    for token in ("s3cret", "other"):
        assert app_client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert app_client.get("/healthz").status_code == 200


def test_beyond_loopback_without_tokens_refuses_to_start(tmp_path: Path) -> None:
    """Listening on 0.0.0.0 with no tokens configured is refused at startup."""
    with pytest.raises(ReprotrainError, match="REPROTRAIN_API_TOKENS"):
        create_app(Settings(data_dir=tmp_path, host="0.0.0.0"), maintenance=False)
    assert Settings(host="0.0.0.0", api_tokens=["x"]).auth_required  # type: ignore[list-item]
    assert not Settings(host="127.0.0.1").auth_required
