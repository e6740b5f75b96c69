"""The quick-start demo: start the embedded service, submit an example job, re-run it, print the verdict.

    python -m reprotrain.examples.demo [SPEC]     (what `make demo` runs)

Starts `reprotrain serve` (SQLite, filesystem broker, one worker: nothing else to install) on a
free port with a fresh data directory, talks to it over REST like any client, and stops it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from reprotrain.cli.output import format_job
from reprotrain.client import Client
from reprotrain.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"reprotrain serve exited with status {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("reprotrain serve did not become ready")


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--keep"]
    keep = "--keep" in sys.argv[1:]  # leave the service up to look at the runs in the web UI
    spec_path = Path(args[0]) if args else ROOT / "examples/specs/tiny_cnn.yaml"
    spec = load_spec(spec_path).canonical()
    data = Path(tempfile.mkdtemp(prefix="reprotrain-demo-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPROTRAIN_")}
    print(f"== starting reprotrain serve on {url} (data in {data})")
    with open(data / "serve.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reprotrain.cli",
                "serve",
                "--data-dir",
                str(data / "d"),
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(url, proc)
            with Client(url) as client:
                print(f"== submitting {spec_path.name}")
                job = client.wait(client.submit(spec)["id"], timeout=600)
                print(format_job(job))
                print(f"\n== re-running job {job['id']}")
                rerun = client.wait(client.rerun(job["id"])["id"], timeout=600)
                print(format_job(rerun))
            if keep:
                print(f"\n== web UI: {url}/  (this pair: {url}/compare/{job['id']}/{rerun['id']})")
                print("== Ctrl-C stops the service")
                try:
                    proc.wait()
                except KeyboardInterrupt:
                    pass
        finally:
            proc.terminate()
            proc.wait(30)
            shutil.rmtree(data, ignore_errors=True)  # the demo's service, database and files
    verdict = (rerun.get("verdict") or {}).get("verdict")
    print(f"\n== verdict: {verdict}")
    return 0 if verdict == "identical" else 1


if __name__ == "__main__":
    sys.exit(main())
