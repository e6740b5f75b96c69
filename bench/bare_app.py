"""The baseline for the submit benchmark: a bare FastAPI endpoint validating the same job spec."""

from typing import Any

from fastapi import FastAPI, Request

from reprotrain.spec import parse_spec

app = FastAPI()


@app.post("/v1/jobs", status_code=201)
async def submit(request: Request) -> dict[str, Any]:
    spec = parse_spec(await request.json())
    return {"spec": spec.canonical(), "spec_digest": spec.digest}


def main() -> None:
    """`python -m bench.bare_app --port P [--workers N]`: served as `reprotrain api --workers N`
    serves, processes sharing one TCP socket (with uvicorn's own, responses wait for ACKs)."""
    import argparse

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from reprotrain.cli.server import tcp_socket

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    config = uvicorn.Config("bench.bare_app:app", port=args.port, log_level="warning", workers=args.workers)
    if args.workers == 1:
        uvicorn.Server(config).run()
    else:
        Multiprocess(config, sockets=[tcp_socket("127.0.0.1", args.port)]).run()


if __name__ == "__main__":
    main()
