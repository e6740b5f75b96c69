"""The web UI: one page shell (`static/ui`) for every UI path, its own scripts and styles, and the
browser's sign-in. The shell holds no data: its script reads everything through the API, under the
API's auth, so a browser without a valid token sees the sign-in form and nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from reprotrain.errors import NotFound, Unauthorized
from reprotrain.service.auth import COOKIE, signed_in, valid
from reprotrain.service.errors import error_response

UI = Path(__file__).parent / "static" / "ui"
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}
# the UI loads only this server's own files and talks only to this server
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


# paths that are never a page of the UI: a 404 there is the API's JSON error, whatever asks
NOT_PAGES = ("/v1/", "/ui/", "/static/", "/docs", "/redoc", "/openapi.json", "/metrics", "/healthz")


class SignIn(BaseModel):
    token: str = Field(min_length=1, max_length=4096)


class SessionPublic(BaseModel):
    auth_required: bool = Field(description="the API wants a token (the UI asks for one)")
    signed_in: bool = Field(description="this request carries a valid token (header or cookie)")


def install(app: FastAPI) -> None:
    served = {p.name for p in UI.iterdir() if p.suffix in _TYPES} if UI.is_dir() else set()
    shell = UI / "index.html"

    def page() -> FileResponse:
        return FileResponse(shell, media_type=_TYPES[".html"], headers=HEADERS)

    app.add_api_route("/", page, include_in_schema=False)
    app.add_api_route("/jobs/{job_id}", page, include_in_schema=False)
    app.add_api_route("/compare/{a}/{b}", page, include_in_schema=False)

    async def no_route(request: Request, e: Exception) -> Response:
        """A path no route has: a browser opening a page gets the shell, with 404, and the UI says
        there is no page here; anything else (an API client, a script, a file) the JSON error."""
        browser = request.method == "GET" and "text/html" in request.headers.get("accept", "")
        if browser and not request.url.path.startswith(NOT_PAGES):
            return FileResponse(shell, status_code=404, media_type=_TYPES[".html"], headers=HEADERS)
        return error_response(404, "not_found", str(getattr(e, "detail", "Not Found")))

    app.add_exception_handler(404, no_route)

    @app.get("/ui/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        if name not in served or name == "index.html":
            raise NotFound(f"no UI file {name!r}", field="name")
        return FileResponse(UI / name, media_type=_TYPES[Path(name).suffix], headers=HEADERS)

    router = APIRouter(prefix="/v1", tags=["session"])

    @router.get("/session", response_model=SessionPublic)
    def session(request: Request) -> SessionPublic:
        """Whether a token is wanted, and whether this request is signed in (open to all)."""
        settings = request.app.state.settings
        if not settings.auth_required:
            return SessionPublic(auth_required=False, signed_in=True)
        return SessionPublic(auth_required=True, signed_in=signed_in(request, settings.token_values()))

    @router.post("/session", status_code=204)
    def sign_in(request: Request, body: SignIn) -> Response:
        """A browser signs in: the token, checked, comes back as an HttpOnly session cookie."""
        settings = request.app.state.settings
        response = Response(status_code=204)
        if not settings.auth_required:
            return response
        if not valid(body.token, settings.token_values()):
            raise Unauthorized("invalid API token")
        response.set_cookie(
            COOKIE,
            body.token,
            httponly=True,
            samesite="strict",
            secure=_https(request),
            path="/",
        )  # no max_age: a session cookie, gone when the browser closes
        return response

    @router.delete("/session", status_code=204)
    def sign_out(request: Request) -> Response:
        response = Response(status_code=204)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=_https(request))
        return response

    app.include_router(router)


def _https(request: Request) -> Any:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
