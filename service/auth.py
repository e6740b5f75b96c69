"""Bearer API tokens: required whenever tokens are configured or the server listens beyond loopback."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from reprotrain.errors import Unauthorized
from reprotrain.settings import Settings


async def require_token(request: Request) -> None:  # async: no I/O, so no threadpool hop
    settings: Settings = request.app.state.settings
    if not settings.auth_required:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    if not any(hmac.compare_digest(token.encode(), t.encode()) for t in settings.token_values()):
        raise Unauthorized("invalid API token")


Authorized = Annotated[None, Depends(require_token)]
