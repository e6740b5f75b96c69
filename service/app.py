"""The FastAPI app factory: `create_app(settings)` builds everything from one settings object."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from celery import Celery
from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from reprotrain import __version__
from reprotrain.artifacts import ArtifactStore
from reprotrain.broker import create_celery, open_broker
from reprotrain.errors import NotFound, ReprotrainError
from reprotrain.series import ColumnCache
from reprotrain.service import errors, ui
from reprotrain.service.auth import Authorized, ScrapeAuthorized
from reprotrain.service.dispatch import make_dispatcher
from reprotrain.service.maintenance import Maintenance
from reprotrain.service.metrics import ApiMetrics, RequestMetrics
from reprotrain.service.routes import plain_routes, router
from reprotrain.service.writer import make_writer
from reprotrain.settings import Settings
from reprotrain.store import Store

log = logging.getLogger("reprotrain.api")

DESCRIPTION = """Run PyTorch training jobs reproducibly, and prove it.

Submit a job spec, re-run any job by id, and read the verdict: `identical`, or where the
re-run diverged and which environment difference explains it. Every error has one shape:
`{"error": {"code", "message", "field"}}`."""


def check_settings(settings: Settings) -> None:
    if settings.auth_required and not settings.api_tokens:
        raise ReprotrainError(
            f"listening on {settings.host} (beyond loopback) needs API tokens: set REPROTRAIN_API_TOKENS"
        )


def from_env() -> FastAPI:
    """The app of one of `reprotrain api --workers N`'s processes, from the environment. One of
    them (whichever holds the data directory's maintenance lock) runs the maintenance loop."""
    import fcntl
    import gc

    from reprotrain import joblog
    from reprotrain.settings import load_settings

    settings = load_settings()
    joblog.configure(settings.log_format)
    lock = open(settings.data_dir / "api-maintenance.lock", "w")  # noqa: SIM115 - held for life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        maintenance = True
        _held.append(lock)
    except BlockingIOError:
        lock.close()
        maintenance = False
    app = create_app(settings, maintenance=maintenance)
    gc.collect()
    gc.freeze()  # as `reprotrain api` does (reprotrain/cli/server.py)
    return app


_held: list[object] = []  # the maintenance lock of this process, open while it lives


def create_app(settings: Settings, *, celery: Celery | None = None, maintenance: bool = True) -> FastAPI:
    check_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        broker = lambda: open_broker(app.state.celery)  # noqa: E731 - one per maintenance thread
        loop = Maintenance(app.state.store, broker, settings, app.state.metrics) if maintenance else None
        if loop is not None:
            loop.start()
        yield
        if loop is not None:
            loop.stop()
        await app.state.writer.aclose()  # the loop runs on: stored jobs reach dispatch
        await app.state.dispatch.aclose()
        app.state.store.close()

    app = FastAPI(
        title="reprotrain",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served below, behind the API's own auth
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.store = Store(settings.db_url)
    app.state.celery = celery or create_celery(settings)
    app.state.artifacts = ArtifactStore(settings.artifacts)
    app.state.columns = ColumnCache()  # finished jobs' traces, parsed for charts
    app.state.metrics = ApiMetrics()
    app.state.dispatch = make_dispatcher(open_broker(app.state.celery), app.state.store)
    app.state.dispatch.start()
    app.state.writer = make_writer(app.state.store, app.state.dispatch, settings.db_url)
    app.state.writer.start()
    errors.install(app)
    app.add_middleware(errors.RefuseControlCharacters)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    app.include_router(router)
    app.router.routes[:0] = plain_routes()
    _probes(app)
    _docs(app)
    ui.install(app)
    return app


VENDOR = Path(__file__).parent / "static" / "vendor"  # deploy/vendor-web.sh fills it from npm
_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def vendored() -> dict[str, str]:
    """Every vendored file the API may serve (MANIFEST: `package@version path sha256`), by path."""
    lines = (VENDOR / "MANIFEST").read_text().splitlines()
    return {path: spec for spec, path, _ in (line.split() for line in lines if line.strip())}


def _docs(app: FastAPI) -> None:
    """The schema and its two viewers, under the API's auth (open where the API is). Their scripts
    and styles are served from here, vendored: /docs works on a machine without internet."""
    served = vendored()

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_: Authorized) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs(_: Authorized) -> HTMLResponse:
        return _offline(
            get_swagger_ui_html(
                openapi_url="/openapi.json",
                title="reprotrain API",
                swagger_js_url="/static/vendor/swagger-ui-dist/swagger-ui-bundle.js",
                swagger_css_url="/static/vendor/swagger-ui-dist/swagger-ui.css",
                swagger_favicon_url="/static/vendor/swagger-ui-dist/favicon-32x32.png",
            )
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc(_: Authorized) -> HTMLResponse:
        return _offline(
            get_redoc_html(
                openapi_url="/openapi.json",
                title="reprotrain API",
                redoc_js_url="/static/vendor/redoc/redoc.standalone.js",
                redoc_favicon_url="/static/vendor/swagger-ui-dist/favicon-32x32.png",
                with_google_fonts=False,
            )
        )

    @app.get("/static/vendor/{path:path}", include_in_schema=False)
    def static(path: str, _: Authorized) -> FileResponse:
        if path not in served or path.endswith("LICENSE"):
            raise NotFound(f"no static file {path!r}", field="path")
        return FileResponse(VENDOR / path, media_type=_TYPES.get(Path(path).suffix))


# the viewers' pages load scripts, styles and images from this server only (ReDoc's footer would
# fetch its logo from a CDN: the browser does not even try); FastAPI's pages start them inline
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'"
)


def _offline(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


def _probes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["probes"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"])
    def readyz(request: Request, response: Response) -> dict[str, Any]:
        """The database answers and the broker accepts connections (why not is in the server log)."""
        checks = {
            "database": _check(lambda: _db_ping(request)),
            "broker": _check(lambda: _broker_ping(request)),
        }
        ok = all(v == "ok" for v in checks.values())
        response.status_code = 200 if ok else 503
        return {"status": "ok" if ok else "unavailable", "checks": checks}

    @app.get("/metrics", tags=["probes"])
    def metrics(request: Request, _: ScrapeAuthorized) -> Response:
        """Prometheus metrics: HTTP requests, jobs submitted and ended, job durations, queue depth,
        running jobs, re-sends (service/metrics.py names them all)."""
        found: ApiMetrics = request.app.state.metrics
        found.scrape(request.app.state.store)
        return Response(generate_latest(found.registry), media_type=CONTENT_TYPE_LATEST)


def _check(fn: Any) -> str:
    try:
        fn()
        return "ok"
    except Exception:
        log.warning("readiness check failed", exc_info=True)
        return "failed"


def _db_ping(request: Request) -> None:
    with request.app.state.store.session() as s:
        s.execute(text("SELECT 1"))


def _broker_ping(request: Request) -> None:
    with request.app.state.celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
