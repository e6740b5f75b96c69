"""Re-runs keep their environment: real uvicorn, Celery workers of two environments, Redis, SQLite
and PostgreSQL. The second environment is real: ATen's scalar CPU kernels (ATEN_CPU_CAPABILITY=
default, as on a CPU without AVX2), which round torch.randn differently."""

from __future__ import annotations

import pytest

from reprotrain.errors import ApiError
from tests.helpers import base_spec, wait_for

TIMEOUT = 180
SPEC = base_spec(name="routed", entrypoint="reprotrain.examples.mlp:train", params={"steps": 3})


def _envs(c) -> set[str]:
    return {q for w in c.workers()["data"] if w["alive"] for q in w["queues"] if q.startswith("env.")}


def _stop(proc) -> None:
    proc.terminate()
    proc.wait(30)


def test_a_rerun_goes_only_to_a_worker_of_its_environment(stack) -> None:
    """A re-run lands on its original's environment queue, on either environment; with that
    environment's workers gone it is refused with what differs, and `env=any` runs it on the
    spec's queue with a verdict marked cross-environment."""
    c = stack.client()
    wait_for(lambda: len(_envs(c)) == 1, 90, "the stack's worker")
    (env_x,) = _envs(c)
    scalar = stack.start_worker({"ATEN_CPU_CAPABILITY": "default", "REPROTRAIN_QUEUES": "scalar"})
    try:
        wait_for(lambda: len(_envs(c)) == 2, 90, "the scalar worker")
        (env_y,) = _envs(c) - {env_x}
        a = c.wait(c.submit(SPEC)["id"], timeout=TIMEOUT)
        b = c.wait(c.submit({**SPEC, "queue": "scalar"})["id"], timeout=TIMEOUT)
        assert a["status"] == b["status"] == "SUCCEEDED", (a["error"], b["error"])
        for original, env, kernels in ((a, env_x, "AVX2"), (b, env_y, "DEFAULT")):
            rerun = c.rerun(original["id"])
            assert rerun["queue"] == env and rerun["spec_digest"] == original["spec_digest"]
            done = c.wait(rerun["id"], timeout=TIMEOUT)
            assert done["verdict"]["verdict"] == "identical", done["verdict"]
            assert "cross_environment" not in done["verdict"]
            assert c.fingerprint(done["id"])["fingerprint"]["cpu"]["capability"] in (kernels, "AVX512")
    finally:
        _stop(scalar)
    other = stack.start_worker({"REPROTRAIN_QUEUES": "scalar"})  # the spec's queue, env x's kernels
    try:
        wait_for(lambda: any(w["alive"] and "scalar" in w["queues"] for w in c.workers()["data"]), 90, "it")
        assert _envs(c) == {env_x}
        with pytest.raises(ApiError) as e:
            c.rerun(b["id"])
        assert e.value.status == 409 and e.value.code == "no_matching_worker"
        assert env_y in e.value.message and env_x in e.value.message
        assert "CPU kernel set (ATen) (cpu.capability) DEFAULT → " in e.value.message
        anywhere = c.rerun(b["id"], env="any")
        assert anywhere["queue"] == "scalar"
        done = c.wait(anywhere["id"], timeout=TIMEOUT)
        v = done["verdict"]
        assert v["cross_environment"] is True and v["verdict"] == "diverged", v
        assert any(env_x in n and env_y in n for n in v["notes"])
    finally:
        _stop(other)


def test_a_rerun_with_a_bad_env_choice_is_a_clear_422(stack) -> None:
    """`env` is same or any; anything else is refused naming the parameter."""
    c = stack.client()
    job = c.submit(SPEC)
    with pytest.raises(ApiError) as e:
        c.rerun(job["id"], env="elsewhere")
    assert e.value.status == 422 and "env" in (e.value.field or e.value.message)
