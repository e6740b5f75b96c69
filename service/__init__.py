"""The REST API edge: FastAPI app factory, routes, schemas, auth, error mapping. Never imports torch."""
