"""Bearer API tokens: required whenever tokens are configured or the server listens beyond loopback."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from reprotrain.errors import Unauthorized
from reprotrain.settings import Settings


def _check(request: Request, accepted: set[str]) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    if not any(hmac.compare_digest(token.encode(), t.encode()) for t in accepted):
        raise Unauthorized("invalid API token")


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
