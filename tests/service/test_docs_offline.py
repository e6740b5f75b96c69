"""/docs and /redoc work offline: every script, style and icon they load is served by the API
itself, from files vendored from npm at pinned versions (deploy/vendor-web.sh), with licenses."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from reprotrain.service.app import VENDOR, create_app, vendored
from reprotrain.settings import Settings
from reprotrain.store.migrate import upgrade
from tests.service.test_auth import AppClient


@pytest.fixture
def open_app(tmp_path: Path) -> Iterator[AppClient]:
    """The API on loopback without tokens, as `reprotrain serve` starts it."""
    settings = Settings(data_dir=tmp_path)
    upgrade(settings.db_url)
    app = create_app(settings, maintenance=False)
    yield AppClient(app)
    app.state.store.close()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_a_docs_page_loads_nothing_from_elsewhere(open_app: AppClient, page: str) -> None:
    """Every URL the page references is this server's own, and each answers with the vendored bytes."""
    html = open_app.get(page).text
    assert "http://" not in html and "https://" not in html, re.findall(r"https?://[^\"' ]+", html)
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assets = [u for u in urls if u.startswith("/static/")]
    assert assets, html
    for url in assets:
        r = open_app.get(url)
        assert r.status_code == 200, url
        assert r.content == (VENDOR / url.removeprefix("/static/vendor/")).read_bytes()


def test_the_vendored_files_are_the_pinned_ones_with_their_licenses() -> None:
    """Each file hashes to what MANIFEST recorded from the registry; each package has its license;
    nothing outside MANIFEST is served."""
    manifest = [line.split() for line in (VENDOR / "MANIFEST").read_text().splitlines() if line.strip()]
    for spec, path, sha in manifest:
        assert re.fullmatch(r"[\w.-]+@\d+\.\d+\.\d+", spec), spec
        assert hashlib.sha256((VENDOR / path).read_bytes()).hexdigest() == sha, path
    assert {p.split("/")[0] for _, p, _ in manifest if p.endswith("LICENSE")} == {
        p.split("/")[0] for _, p, _ in manifest
    }
    assert set(vendored()) == {p for _, p, _ in manifest}


def test_only_vendored_files_are_served(open_app: AppClient) -> None:
    """Paths not in MANIFEST (a traversal, the manifest itself) are 404."""
    for path in ("../app.py", "MANIFEST", "redoc/../../app.py", "swagger-ui-dist/LICENSE"):
        assert open_app.get(f"/static/vendor/{path}").status_code == 404, path


def test_each_plain_route_is_a_documented_one(open_app: AppClient) -> None:
    """A route served ahead of the router (service/routes.py plain_routes) answers a path and
    method the schema documents, under the same operation, so the docs describe what answers."""
    from reprotrain.service.routes import PlainRoute

    routes = open_app.app.router.routes
    plain = [r for r in routes if isinstance(r, PlainRoute)]
    assert plain and routes[: len(plain)] == plain  # ahead of every other route
    schema = open_app.get("/openapi.json").json()["paths"]
    for route in plain:
        for method in route.methods or ():
            assert schema[route.path][method.lower()]["operationId"].startswith(route.name)
