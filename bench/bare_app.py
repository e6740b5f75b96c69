"""The baseline for the submit benchmark: a bare FastAPI endpoint validating the same job spec."""

from typing import Any

from fastapi import FastAPI, Request

from reprotrain.spec import parse_spec

app = FastAPI()


@app.post("/v1/jobs", status_code=201)
async def submit(request: Request) -> dict[str, Any]:
    spec = parse_spec(await request.json())
    return {"spec": spec.canonical(), "spec_digest": spec.digest}
