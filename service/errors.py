"""One error shape for every failure: {"error": {"code", "message", "field"}}; never a traceback."""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from reprotrain.errors import (
    ArtifactTampered,
    BundleInvalid,
    BundleTooLarge,
    Conflict,
    InputError,
    NotFound,
    ReprotrainError,
    RequestInvalid,
    RequestTooLarge,
    SpecInvalid,
    Unauthorized,
)
from reprotrain.store.repo import store_unavailable

log = logging.getLogger("reprotrain.api")
RETRY_AFTER_S = 5


STATUS: list[tuple[type[ReprotrainError], int]] = [
    (BundleTooLarge, 413),
    (BundleInvalid, 422),
    (SpecInvalid, 422),
    (RequestInvalid, 422),
    (InputError, 422),
    (NotFound, 404),
    (Conflict, 409),
    (ArtifactTampered, 409),
    (RequestTooLarge, 413),
    (Unauthorized, 401),
]


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field}}
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ReprotrainError)
    async def _ours(_: Request, e: ReprotrainError) -> JSONResponse:
        status = next((s for cls, s in STATUS if isinstance(e, cls)), 500)
        if status == 500:
            log.error("unmapped error: %r", e)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return error_response(status, e.code, e.message, e.field, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        return error_response(422, "request_invalid", str(first.get("msg")), ".".join(loc) or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return error_response(e.status_code, code, str(e.detail))

    @app.exception_handler(DBAPIError)
    @app.exception_handler(SQLAlchemyTimeout)
    @app.exception_handler(psycopg.Error)  # the PostgreSQL writer's own connection (service/writer.py)
    async def _database(_: Request, e: Exception) -> JSONResponse:
        away = isinstance(e, psycopg.OperationalError | psycopg.InterfaceError) or store_unavailable(e)
        if not away:
            log.exception("database error")
            return error_response(500, "internal", "internal server error; see the server log")
        log.warning("the database is unavailable: %s: %s", type(e).__name__, (str(e).splitlines() or [""])[0])
        return error_response(
            503,
            "store_unavailable",
            "the database is unavailable; this request may not have taken effect: try it again shortly",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        log.exception("internal error")
        return error_response(500, "internal", "internal server error; see the server log")


_CONTROL = re.compile("[\x00-\x1f\x7f]")


class RefuseControlCharacters:
    """A path or query string holding a NUL or another control character (`%00` in a job id, in
    `name=`) is refused with 422 before any route, so no such string reaches the database, which
    would refuse it with an error of its own."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            query = unquote(scope.get("query_string", b"").decode("latin-1"))
            for text, field in ((scope.get("path", ""), "path"), (query, "query")):
                if _CONTROL.search(text):
                    response = error_response(
                        422, "request_invalid", f"the {field} holds a control character", field
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
