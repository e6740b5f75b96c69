"""Bisect and pre-flight over the service: real uvicorn, Celery worker, Redis, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from reprotrain.errors import ApiError
from tests.helpers import ROOT, base_spec

TIMEOUT = 180
NOISY = {"entrypoint": "reprotrain.examples.noisy_op:train", "params": {"steps": 8, "noise_step": 5}}


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPROTRAIN_")} | {"REPROTRAIN_URL": url}
    run = [sys.executable, "-m", "reprotrain.cli", *args]
    return subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_a_diverged_rerun_offers_a_bisect_that_names_the_op(stack) -> None:
    c = stack.client()
    job = c.wait(c.submit(base_spec(name="noisy", **NOISY))["id"], timeout=TIMEOUT)
    rerun = c.wait(c.rerun(job["id"])["id"], timeout=TIMEOUT)
    v = rerun["verdict"]
    assert v["verdict"] == "diverged" and v["divergence"]["step"] == 5, v
    route = f"/v1/jobs/{job['id']}/bisect/{rerun['id']}"
    assert v["bisect"] == route and c.compare(job["id"], rerun["id"])["bisect"] == route

    bisect = c.bisect(job["id"][:8], rerun["id"])  # prefixes work here as on every job route
    assert bisect["spec"]["bisect"] == {"a": job["id"], "b": rerun["id"], "until_step": 5}
    assert "bisect" in bisect["spec"]["tags"]
    done = c.wait(bisect["id"], timeout=TIMEOUT)
    assert done["status"] == "SUCCEEDED", done["error"]
    report = done["bisect"]
    assert report["found"] == "op" and report["step"] == 5
    first = report["first"]
    assert (first["op"], first["module"]) == ("reprotrain_examples::noisy_add", "encoder.1.mix")
    assert report["a"] == job["id"] and report["b"] == rerun["id"]
    assert report["outputs"][0]["differing"] == 1 and len(report["before"]) == 8

    # the CLI: the verdict's hint, and `bisect --wait` printing the report
    compared = cli(stack.url, "compare", job["id"], rerun["id"])
    assert compared.returncode == 1 and f"reprotrain bisect {job['id']} {rerun['id']}" in compared.stdout
    bisected = cli(stack.url, "bisect", job["id"], rerun["id"], "--wait")
    assert bisected.returncode == 0, bisected.stderr
    out = bisected.stdout
    assert "first differing op: reprotrain_examples::noisy_add in step 5 in encoder.1.mix" in out
    assert "module   encoder.1.mix" in out and "the 8 ops before it agreed" in out


def test_bisect_is_refused_where_there_is_nothing_to_find(stack) -> None:
    c = stack.client()
    job = c.wait(c.submit(base_spec(name="quiet"))["id"], timeout=TIMEOUT)
    rerun = c.wait(c.rerun(job["id"])["id"], timeout=TIMEOUT)
    assert rerun["verdict"]["verdict"] == "identical" and "bisect" not in rerun["verdict"]
    with pytest.raises(ApiError) as e:
        c.bisect(job["id"], rerun["id"])
    assert e.value.status == 409 and "nothing to bisect: the verdict is identical" in e.value.message


def test_preflight_over_the_service(stack) -> None:
    c = stack.client()
    spec = base_spec(name="preflight", **NOISY)
    spec["determinism"] = {"policy": "strict", "preflight": 6}
    failed = c.wait(c.submit(spec)["id"], timeout=TIMEOUT)
    assert failed["status"] == "FAILED"
    assert failed["error"]["type"] == "nondeterministic"
    assert failed["bisect"]["first"]["module"] == "encoder.1.mix" and failed["bisect"]["step"] == 5
    spec["determinism"]["preflight"] = 3
    passed = c.wait(c.submit(spec)["id"], timeout=TIMEOUT)
    assert passed["status"] == "SUCCEEDED", passed["error"]
    assert passed["preflight"]["steps"] == 3 and passed["preflight"]["ops"] > 100


def test_a_side_b_submitted_by_hand_with_no_side_a_says_so(stack) -> None:
    """A client may submit a side's spec itself: a partner that is no job, or the job itself, gets a
    report saying why nothing was compared, not a crashed or hour-long waiting worker."""
    c = stack.client()
    spec = base_spec(name="orphan", entrypoint="reprotrain.examples.mlp:train", params={"steps": 2})
    spec["bisect"] = {"until_step": 1, "side": "b", "partner": "no-such-job"}
    done = c.wait(c.submit(spec)["id"], timeout=TIMEOUT)
    assert done["status"] == "SUCCEEDED", done["error"]
    assert done["bisect"]["found"] == "ended"
    assert done["bisect"]["summary"] == "not compared: side a's job no-such-job does not exist"


def _live_queues(c) -> set[str]:
    return {q for w in c.workers()["data"] if w["alive"] for q in w["queues"]}


def test_a_bisect_across_environments_runs_a_side_on_a_worker_of_each(stack) -> None:
    """Two workers whose environments differ for real: the second runs ATen's scalar CPU kernels
    (ATEN_CPU_CAPABILITY=default, as on a machine without AVX2). The same job on each diverges at
    step 0; the bisect runs side a on the first worker's environment queue and side b on the
    second's, and side b's job reports the first op where the environments part and how they differ."""
    c = stack.client()
    other = stack.start_worker({"ATEN_CPU_CAPABILITY": "default", "REPROTRAIN_QUEUES": "scalar"})
    try:
        from tests.helpers import wait_for

        wait_for(lambda: len({q for q in _live_queues(c) if q.startswith("env.")}) == 2, 90, "second worker")
        spec = base_spec(name="across", entrypoint="reprotrain.examples.mlp:train", params={"steps": 4})
        spec["track"] = {"digest_every": 1}
        a = c.wait(c.submit(spec)["id"], timeout=TIMEOUT)
        b = c.wait(c.submit({**spec, "queue": "scalar"})["id"], timeout=TIMEOUT)
        assert a["status"] == b["status"] == "SUCCEEDED", (a["error"], b["error"])
        verdict = c.compare(a["id"], b["id"])
        assert verdict["verdict"] == "diverged" and verdict["divergence"]["step"] == 0, verdict
        assert verdict["bisect"] == f"/v1/jobs/{a['id']}/bisect/{b['id']}"

        side_b = c.bisect(a["id"], b["id"])
        bisect = side_b["spec"]["bisect"]
        assert (bisect["side"], bisect["a"], bisect["b"], bisect["until_step"]) == ("b", a["id"], b["id"], 0)
        side_a = c.get(bisect["partner"])
        assert side_a["spec"]["bisect"]["side"] == "a" and side_a["queue"] != side_b["queue"]
        assert {side_a["queue"], side_b["queue"]} == {q for q in _live_queues(c) if q.startswith("env.")}
        done = c.wait(side_b["id"], timeout=TIMEOUT)
        assert done["status"] == "SUCCEEDED", done["error"]
        assert c.get(side_a["id"])["status"] == "SUCCEEDED"
        report = done["bisect"]
        assert report["found"] == "op" and report["step"] == 0, report["summary"]
        assert report["first"]["op"] == "aten::randn" and report["outputs"][0]["differing"] > 0
        assert (report["a"], report["b"]) == (a["id"], b["id"])
        assert "CPU kernel set (ATen) (cpu.capability)" in report["environment"]
        assert "DEFAULT" in report["environment"] and side_a["queue"] in report["environment"]
    finally:
        other.terminate()
        other.wait(30)
    # with the second environment's only worker gone, its side has nowhere to run
    with pytest.raises(ApiError) as e:
        c.bisect(a["id"], b["id"])
    assert e.value.status == 409 and e.value.code == "no_matching_worker", e.value.message
    assert side_b["queue"] in e.value.message and side_a["queue"] in e.value.message
