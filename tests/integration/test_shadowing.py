"""A job's own modules named like ours (`worker`, `service`, `examples`, …) are the job's, everywhere.

Nothing of reprotrain is importable under a generic top-level name, and no process of ours puts
its working directory or the repository on a job's path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reprotrain.bundles import make_bundle
from reprotrain.client import Client
from reprotrain.procs import children
from tests.helpers import base_spec, start_serve

NAMES = ("worker", "service", "examples", "bench", "deploy", "tests")
IMPORTS = "import importlib\n" + f"ORIGINS = {{n: importlib.import_module(n).ORIGIN for n in {NAMES!r}}}\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A training repo whose modules carry the names of ours, each saying whose it is."""
    root = tmp_path / "project"
    (root / "examples").mkdir(parents=True)
    for name in NAMES:
        path = root / "examples" / "__init__.py" if name == "examples" else root / f"{name}.py"
        path.write_text(f"ORIGIN = 'user {name}'\n")
    (root / "userjob.py").write_text(IMPORTS + "\n\ndef train(ctx):\n    return dict(ORIGINS)\n")
    (root / "main.py").write_text(IMPORTS + "from reprotrain.report import log\n\nlog(0, **ORIGINS)\n")
    (root / "job.yaml").write_text("name: shadow\nentrypoint: userjob:train\nseed: 1\ndevice: cpu\n")
    return root


EXPECTED = {n: f"user {n}" for n in NAMES}
SCRIPT_COMMANDS = [["python", "main.py"], ["sh", "-c", "python main.py"]]


def test_function_mode_imports_the_jobs_own_modules(run_job, project: Path) -> None:
    """train() that imports worker, service, examples, bench, deploy, tests gets the job's modules."""
    result, _ = run_job(base_spec(entrypoint="userjob:train", params={}), code_dir=project)
    assert result.status.value == "SUCCEEDED", result.error
    assert result.metrics == EXPECTED


@pytest.mark.parametrize("command", SCRIPT_COMMANDS, ids=["inline", "subprocess"])
def test_script_mode_imports_the_jobs_own_modules(run_job, project: Path, command: list[str]) -> None:
    """A script, run inline or as a new interpreter, imports the job's modules, not reprotrain's."""
    spec = base_spec(command=command, params={}, determinism={"policy": "seeded"})
    spec.pop("entrypoint")
    result, _ = run_job(spec, code_dir=project)
    assert result.status.value == "SUCCEEDED", result.error
    assert result.metrics == EXPECTED


def test_cli_run_from_a_directory_holding_worker_py(project: Path, tmp_path: Path) -> None:
    """`reprotrain run` started in such a directory runs the job (its fork server is not shadowed)."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("reprotrain")), "run", "job.yaml", "--out", str(out)],
        cwd=project,
        env={k: v for k, v in os.environ.items() if not k.startswith("REPROTRAIN_")},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "result.json").read_text())["metrics"] == EXPECTED


def test_serve_from_a_directory_holding_worker_py_runs_bundles_in_both_modes(
    project: Path, tmp_path: Path
) -> None:
    """`reprotrain serve` started there runs its worker; a bundle's own modules win in both modes."""
    serve = start_serve(tmp_path, cwd=project)
    try:
        with Client(serve.url) as c:
            bundle = c.upload_bundle(make_bundle(project))["digest"]
            fn = c.submit({"entrypoint": "userjob:train", "bundle": bundle, "seed": 1, "device": "cpu"})
            script = c.submit(
                {"command": ["python", "main.py"], "bundle": bundle, "seed": 1, "device": "cpu"}
            )
            for job in (c.wait(fn["id"], timeout=120), c.wait(script["id"], timeout=120)):
                assert job["status"] == "SUCCEEDED", job["error"]
                assert job["metrics"] == EXPECTED
    finally:
        serve.stop()


def test_serve_exits_non_zero_when_its_worker_dies(tmp_path: Path) -> None:
    """A killed embedded worker ends `serve` with a non-zero status and the worker's last words."""
    serve = start_serve(tmp_path)
    try:
        (worker,) = [p for p in children(serve.proc.pid) if b"reprotrain.worker" in _cmdline(p)]
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while serve.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        code = serve.stop()
    assert code not in (0, -signal.SIGTERM), serve.output()[-2000:]
    assert "the worker exited with status -9" in serve.output()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_ctrl_c_ends_serve_cleanly(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to serve's process group) stops API and worker as an interrupt, no worker error."""
    serve = start_serve(tmp_path)
    try:
        os.killpg(serve.proc.pid, signal.SIGINT)
        code = serve.proc.wait(60)
    finally:
        serve.stop()
    assert code == 130 and "reprotrain: interrupted" in serve.output(), serve.output()[-2000:]
    assert "the worker exited" not in serve.output()
