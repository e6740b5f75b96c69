"""CUDA paths: cuDNN conv nets reproduce under strict, benchmark recorded, CUDA ops policed."""

from __future__ import annotations

import pytest

from reprotrain.compare import compare
from reprotrain.outputs import RunFiles
from tests.helpers import base_spec

pytestmark = pytest.mark.gpu

CNN = {
    "entrypoint": "reprotrain.examples.tiny_cnn:train",
    "device": "cuda",
    "params": {"epochs": 2, "samples": 512, "workers": 2},
    "track": {"digest_every": 1},
}


def op_spec(op: str, policy: str) -> dict:
    return base_spec(
        entrypoint="reprotrain.examples.nondeterministic:train",
        device="cuda",
        params={"mode": "op", "op": op, "steps": 4},
        determinism={"policy": policy},
    )


def test_cudnn_conv_net_reproduces_under_strict(run_job) -> None:
    """A cuDNN conv net run twice in fresh processes under strict is bit-identical."""
    a, a_dir = run_job(base_spec(**CNN))
    b, b_dir = run_job(base_spec(**CNN))
    assert a.status == "SUCCEEDED", a.error
    assert a.fingerprint.cuda.used and a.fingerprint.cuda.gpus
    assert a.fingerprint.cuda.cudnn
    assert compare(a, b, RunFiles.local(a_dir), RunFiles.local(b_dir)).verdict == "identical"


def test_cudnn_benchmark_on_and_off_are_recorded_and_named(run_job) -> None:
    """benchmark=True vs the policy's False: each effective, and named as a likely cause."""
    off, _ = run_job(base_spec(**CNN, determinism={"policy": "seeded"}))
    on, _ = run_job(base_spec(**CNN, determinism={"policy": "seeded", "cudnn_benchmark": True}))
    assert off.determinism.effective.cudnn_benchmark is False
    assert on.determinism.effective.cudnn_benchmark is True
    v = compare(off, on)
    keys = {c.key for c in v.causes if c.likely_cause}
    assert "determinism.cudnn_benchmark" in keys


def test_tf32_off_under_strict_on_cuda(run_job) -> None:
    """strict turns TF32 off for matmul and cuDNN, as torch reports it on the device."""
    r, _ = run_job(base_spec(**CNN))
    assert r.determinism.effective.allow_tf32 == {"matmul": False, "cudnn": False}


@pytest.mark.parametrize("op", ["histc", "put_"])
def test_cuda_nondeterministic_op_fails_strict_and_is_listed_under_warn(run_job, op: str) -> None:
    """An op torch flags on CUDA fails a strict job naming it; under warn it is listed."""
    strict, _ = run_job(op_spec(op, "strict"))
    assert strict.status == "FAILED"
    assert strict.error.nondeterministic_op, strict.error
    warn, _ = run_job(op_spec(op, "warn"))
    assert warn.status == "SUCCEEDED", warn.error
    assert [o.op for o in warn.nondeterministic_ops] == [strict.error.nondeterministic_op]


def test_index_add_is_deterministic_under_strict_on_cuda(run_job) -> None:
    """index_add_ on CUDA has a deterministic kernel that strict selects (torch lists it among the ops
    that act deterministically, from 1.11 on): it runs, and two runs agree."""
    a, _ = run_job(op_spec("index_add_", "strict"))
    b, _ = run_job(op_spec("index_add_", "strict"))
    assert a.status == "SUCCEEDED", a.error
    assert compare(a, b).verdict == "identical"


def test_preflight_and_bisect_find_a_real_nondeterministic_cuda_op(run_job) -> None:
    """index_put_(accumulate=True) with duplicate indices on CUDA, policy seeded: atomic adds in a
    different order each run (seeded, so nothing random differs first). Pre-flight names the op."""
    spec = base_spec(
        entrypoint="reprotrain.examples.nondeterministic:train",
        device="cuda",
        params={"mode": "accumulate", "steps": 6},
        determinism={"policy": "seeded", "preflight": 3},
    )
    r, _ = run_job(spec)
    assert r.status == "FAILED" and r.error.type == "nondeterministic", r.error
    assert r.bisect.found == "op" and r.bisect.step == 0
    assert r.bisect.first.op in ("aten::index_put_", "aten::_index_put_impl_")
    assert r.bisect.outputs[0].differing > 0 and r.bisect.outputs[0].max_abs > 0
    spec["determinism"] = {"policy": "strict", "preflight": 3}  # deterministic kernel under strict
    r, _ = run_job(spec)
    assert r.status == "SUCCEEDED", (r.error, r.bisect and r.bisect.summary)
    assert r.preflight.steps == 3
