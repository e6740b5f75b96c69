"""End to end over HTTP: real uvicorn, real Celery worker, real Redis, SQLite and PostgreSQL."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import httpx
import pytest

from reprotrain.bundles import make_bundle
from reprotrain.errors import ApiError
from tests.helpers import ROOT, base_spec, submit_script

TIMEOUT = 180


def test_submit_rerun_identical(stack) -> None:
    """submit → SUCCEEDED → rerun → verdict identical, with digests and artifacts stored."""
    c = stack.client()
    job = c.wait(c.submit(base_spec(name="e2e-mlp"))["id"], timeout=TIMEOUT)
    assert job["status"] == "SUCCEEDED", job["error"]
    assert job["digests"]["model"]["overall"] and job["env_digest"]
    names = {a["name"] for a in c.artifacts(job["id"])["data"]}
    assert {"outputs/model.pt", "_job/state/model.safetensors", "_job/stdout.log"} <= names
    rerun = c.wait(c.rerun(job["id"])["id"], timeout=TIMEOUT)
    assert rerun["rerun_of"] == job["id"]
    assert rerun["verdict"]["verdict"] == "identical", rerun["verdict"]
    assert c.compare(job["id"], rerun["id"])["verdict"] == "identical"
    assert c.download(job["id"], "outputs/model.pt")[:2] == b"PK"  # torch.save's zip


def test_nondeterministic_rerun_diverges_at_its_step(stack) -> None:
    """A job adding OS entropy at step 4: its re-run is diverged at step 4 in 2.weight."""
    spec = base_spec(
        name="e2e-noise",
        entrypoint="reprotrain.examples.nondeterministic:train",
        params={"mode": "urandom", "noise_step": 4, "steps": 8},
    )
    c = stack.client()
    job = c.wait(c.submit(spec)["id"], timeout=TIMEOUT)
    rerun = c.wait(c.rerun(job["id"])["id"], timeout=TIMEOUT)
    v = rerun["verdict"]
    assert v["verdict"] == "diverged"
    assert v["divergence"]["step"] == 4 and v["divergence"]["tensor"] == "2.weight"
    assert v["divergence"]["tensor_max_abs"] > 0


def test_bundle_script_runs_unchanged_and_rerun_is_compared_file_by_file(stack) -> None:
    """A third-party script uploaded as a bundle runs in script mode; its re-run compares each file."""
    c = stack.client()
    digest = c.upload_bundle(make_bundle(ROOT / "examples" / "script"))["digest"]
    spec = {
        "name": "e2e-script",
        "command": ["python", "train.py"],
        "bundle": digest,
        "seed": 5,
        "determinism": {"policy": "seeded"},
        "device": "cpu",
    }
    job = c.wait(c.submit(spec)["id"], timeout=TIMEOUT)
    assert job["status"] == "SUCCEEDED", job["error"]
    rerun = c.wait(c.rerun(job["id"])["id"], timeout=TIMEOUT)
    assert rerun["verdict"]["verdict"] == "identical"
    assert rerun["verdict"]["files"] == {"w.pt": "same", "weights.json": "same"}
    assert b"step 4 norm" in b"".join(c.logs(job["id"]))


def test_a_rerun_over_the_service_classes_outputs_by_role(stack, tmp_path: Path) -> None:
    """A bundled script writing a time-named event file, timing lines and a checkpoint whose paths
    differ: the worker's verdict is results_identical, each incidental output listed with why."""
    (tmp_path / "t.py").write_text(
        "import os, time, torch\n"
        "torch.manual_seed(0)\n"
        "open(f'events.out.tfevents.{time.time_ns()}', 'w').write('x')\n"
        "print(f'step 0 took {time.perf_counter_ns() % 997}ms', flush=True)\n"
        "tmp = f'tmp{os.urandom(4).hex()}.pt'\n"  # a pid names nothing in a confined job: it is 2
        "torch.save({'w': torch.randn(3), 'saved_as': os.path.abspath(tmp)}, tmp)\n"
        "os.replace(tmp, 'model.pt')\n"
    )
    c = stack.client()
    job = c.wait(submit_script(c, tmp_path, "e2e-roles", "t.py")["id"], timeout=TIMEOUT)
    assert job["status"] == "SUCCEEDED", job["error"]
    rerun = c.wait(c.rerun(job["id"])["id"], timeout=TIMEOUT)
    v = rerun["verdict"]
    assert v["verdict"] == "results_identical", v
    reasons = {i["what"]: i["reason"] for i in v["incidental"]}
    assert reasons["model.pt"] == "tensors identical; only paths differ (saved_as)"
    assert any(r == "TensorBoard event file" for r in reasons.values())
    assert reasons["stdout"].startswith("timing noise only")
    assert c.compare(job["id"], rerun["id"]) == v  # the worker's verdict, as stored


def test_list_filters_and_paginates(stack) -> None:
    """The list filters by status and name and pages with a total count."""
    c = stack.client()
    ids = [c.submit(base_spec(name="e2e-page", params={"epochs": 1, "samples": 32}))["id"] for _ in range(3)]
    for i in ids:
        c.wait(i, timeout=TIMEOUT)
    first = c.list(name="e2e-page", limit=2)
    second = c.list(name="e2e-page", limit=2, offset=2)
    assert first["count"] == 3 and len(first["data"]) == 2 and len(second["data"]) == 1
    assert {j["id"] for j in first["data"] + second["data"]} == set(ids)
    assert c.list(name="e2e-page", status=["FAILED"])["count"] == 0
    assert c.list(name="e2e-page", status=["SUCCEEDED,FAILED"])["count"] == 3
    huge = httpx.get(f"{stack.url}/v1/jobs", params={"offset": 2**70})  # overflowed SQLite: was a 500
    assert huge.status_code == 422 and huge.json()["error"]["field"] == "offset", huge.text


def test_cancel_running_job(stack, tmp_path: Path) -> None:
    """Cancelling a running job stops it: CANCELED; cancelling again is a 409."""
    (tmp_path / "sleep.py").write_text("import time\nprint('start', flush=True)\ntime.sleep(120)\n")
    c = stack.client()
    job = submit_script(c, tmp_path, "e2e-sleep", "sleep.py")
    follow = c.logs(job["id"], follow=True)
    assert b"start" in next(iter(follow))  # the job is running and its output streams live
    assert c.cancel(job["id"])["status"] == "RUNNING"
    done = c.wait(job["id"], timeout=60)
    assert done["status"] == "CANCELED"
    with pytest.raises(ApiError) as e:
        c.cancel(job["id"])
    assert e.value.status == 409


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({**base_spec(), "learning_rate": 1}, 422, "learning_rate"),
        ({**base_spec(), "seed": -3}, 422, "seed"),
        ({**base_spec(), "seed": "abc"}, 422, "seed"),
        ({**base_spec(), "bundle": "sha256:" + "ab" * 32}, 404, "bundle"),
        ([1, 2, 3], 422, None),
    ],
)
def test_bad_specs_are_4xx_naming_the_field(stack, body, status: int, field: str | None) -> None:
    """Bad specs get a 4xx in the one error shape, naming the field."""
    r = httpx.post(f"{stack.url}/v1/jobs", json=body)
    assert r.status_code == status
    assert r.json()["error"]["field"] == field
    assert r.json()["error"]["message"]


def test_non_json_body_and_unknown_job(stack) -> None:
    """A body that is not JSON is a 422; an unknown id is a 404 on every job route."""
    r = httpx.post(f"{stack.url}/v1/jobs", content=b"seed: [", headers={"Content-Type": "text/plain"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"]
    for method, path in [
        ("GET", "/v1/jobs/nope"),
        ("POST", "/v1/jobs/nope/rerun"),
        ("POST", "/v1/jobs/nope/cancel"),
        ("GET", "/v1/jobs/nope/logs"),
        ("GET", "/v1/jobs/nope/trace"),
        ("GET", "/v1/jobs/nope/artifacts"),
        ("GET", "/v1/jobs/nope/compare/nope2"),
    ]:
        r = httpx.request(method, stack.url + path)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "not_found"


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"this is not a tarball", "not a tar.gz"),
        (_tar([_file("../escape.txt")]), "escape.txt"),
        (_tar([_file("/tmp/reprotrain-abs-escape.txt")]), "reprotrain-abs-escape.txt"),
        (_tar([_link("evil", "../../../../etc")]), "evil"),
    ],
)
def test_malicious_bundles_are_refused(stack, payload: bytes, needle: str) -> None:
    """Malformed or malicious tars are a 422 naming the problem, and nothing lands outside the store."""
    r = httpx.post(f"{stack.url}/v1/bundles", content=payload, headers={"Content-Type": "application/gzip"})
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]["message"]
    assert not Path("/tmp/reprotrain-abs-escape.txt").exists()
    bundles = Path(stack.env["REPROTRAIN_DATA_DIR"]) / "artifacts" / "bundles"
    assert all(p.name.endswith(".tar.gz") for p in bundles.glob("*")) if bundles.exists() else True


def test_probes_and_openapi(stack) -> None:
    """healthz, readyz and metrics answer; OpenAPI lists every v1 route."""
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{stack.url}/readyz").json()["checks"] == {"database": "ok", "broker": "ok"}
    assert 'reprotrain_jobs{status="SUCCEEDED"}' in httpx.get(f"{stack.url}/metrics").text
    paths = httpx.get(f"{stack.url}/openapi.json").json()["paths"]
    for p in [
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/rerun",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/logs",
        "/v1/jobs/{job_id}/trace",
        "/v1/jobs/{job_id}/fingerprint",
        "/v1/jobs/{job_id}/artifacts",
        "/v1/jobs/{job_id}/artifacts/{name}",
        "/v1/jobs/{a}/compare/{b}",
        "/v1/bundles",
    ]:
        assert p in paths, p
