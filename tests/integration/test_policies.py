"""Determinism policies applied in real job processes, recorded as requested and effective."""

from __future__ import annotations

from reprotrain.compare import compare
from tests.conftest import base_spec

ALERT = {"entrypoint": "examples.nondeterministic:train", "params": {"mode": "alert", "steps": 4}}


def test_strict_records_requested_and_effective_knobs(run_job) -> None:
    """Under strict, torch reports deterministic algorithms, 1 thread, TF32 off, oneDNN deterministic."""
    r, _ = run_job(base_spec())
    eff = r.determinism["effective"]
    assert r.determinism["requested"]["deterministic_algorithms"] == "error"
    assert eff["deterministic_algorithms"] == "error"
    assert eff["num_threads"] == 1
    assert eff["cudnn_benchmark"] is False and eff["cudnn_deterministic"] is True
    assert eff["allow_tf32"] == {"matmul": False, "cudnn": False}
    assert eff["mkldnn_deterministic"] is True and eff["fill_uninitialized_memory"] is True
    assert eff["cublas_workspace_config"] == ":4096:8"
    assert eff["python_hash_seed"] == "0"
    assert eff["torch_initial_seed"] == 1234


def test_off_leaves_torch_defaults(run_job) -> None:
    """Under off nothing is switched: deterministic algorithms stay off, no cuBLAS config."""
    r, _ = run_job(base_spec(determinism={"policy": "off"}))
    eff = r.determinism["effective"]
    assert eff["deterministic_algorithms"] == "off"
    assert eff["cublas_workspace_config"] is None
    assert eff["mkldnn_deterministic"] is False
    assert eff["torch_initial_seed"] != 1234


def test_strict_fails_on_a_nondeterministic_op_naming_it(run_job) -> None:
    """An op without a deterministic implementation fails a strict job with torch's message."""
    r, job_dir = run_job(base_spec(**ALERT))
    assert r.status == "FAILED"
    assert r.error["nondeterministic_op"] == "example_scatter_add"
    assert "does not have a deterministic implementation" in r.error["message"]
    assert "example_scatter_add" in (job_dir / "stderr.log").read_text()


def test_warn_runs_and_lists_each_op(run_job) -> None:
    """Under warn the job succeeds and the result lists the op that warned."""
    r, _ = run_job(base_spec(determinism={"policy": "warn"}, **ALERT))
    assert r.status == "SUCCEEDED", r.error
    assert [o["op"] for o in r.nondeterministic_ops] == ["example_scatter_add"]
    assert r.nondeterministic_ops[0]["count"] == 1


def test_off_with_a_fork_server_is_as_random_as_a_fresh_interpreter(run_job) -> None:
    """Forked children under off do not share the server's RNG streams: two runs differ."""
    spec = base_spec(determinism={"policy": "off"})
    a, _ = run_job(spec)
    b, _ = run_job(spec)
    assert compare(a, b)["verdict"] == "diverged"


def test_job_errors_are_captured(run_job) -> None:
    """An entrypoint that does not exist fails with a message naming it."""
    r, _ = run_job(base_spec(entrypoint="examples.mlp:nope"))
    assert r.status == "FAILED"
    assert "examples.mlp:nope" in r.error["message"]
