"""The REST service: FastAPI app factory, routes, schemas, auth, error mapping. Never imports torch."""

from reprotrain.service.app import create_app

__all__ = ["create_app"]
