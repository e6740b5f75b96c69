"""The REST service: FastAPI app factory, routes, schemas, auth, error mapping. Never imports torch."""

from service.app import create_app

__all__ = ["create_app"]
