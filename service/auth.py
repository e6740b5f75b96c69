"""API tokens: required whenever tokens are configured or the server listens beyond loopback.

A client sends `Authorization: Bearer <token>`. The web UI signs in once (`POST /v1/session`) and
the browser then holds the token in an HttpOnly, SameSite=Strict session cookie, never in a URL
or in script-readable storage; a request that changes something on the cookie's strength must also
carry `X-Reprotrain-UI: 1`, which a page of another site cannot send without asking first (CSRF).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from reprotrain.errors import Unauthorized
from reprotrain.settings import Settings

COOKIE = "reprotrain_session"
UI_HEADER = "x-reprotrain-ui"
_SAFE = {"GET", "HEAD", "OPTIONS"}


def valid(token: str, accepted: set[str]) -> bool:
    return any(hmac.compare_digest(token.encode(), t.encode()) for t in accepted)


def _check(request: Request, accepted: set[str]) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header and (cookie := request.cookies.get(COOKIE)):
        if request.method not in _SAFE and request.headers.get(UI_HEADER) != "1":
            raise Unauthorized(f"a signed-in browser's change needs the {UI_HEADER} header")
        scheme, token = "bearer", cookie
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    if not valid(token, accepted):
        raise Unauthorized("invalid API token")


def signed_in(request: Request, accepted: set[str]) -> bool:
    """Whether this request carries a valid token (header or session cookie)."""
    try:
        _check(request, accepted)
    except Unauthorized:
        return False
    return True


async def require_token(request: Request) -> None:  # async: no I/O, so no threadpool hop
    settings: Settings = request.app.state.settings
    if settings.auth_required:
        _check(request, settings.token_values())


async def require_scrape_token(request: Request) -> None:
    """/metrics: any API token, or the scrape token a Prometheus server is given instead."""
    settings: Settings = request.app.state.settings
    if settings.auth_required:
        scrape = {settings.metrics_token.get_secret_value()} if settings.metrics_token else set()
        _check(request, settings.token_values() | scrape)


Authorized = Annotated[None, Depends(require_token)]
ScrapeAuthorized = Annotated[None, Depends(require_scrape_token)]
