"""Determinism policies applied in real job processes, recorded as requested and effective."""

from __future__ import annotations

from reprotrain.compare import compare
from tests.helpers import base_spec

ALERT = {"entrypoint": "reprotrain.examples.nondeterministic:train", "params": {"mode": "op", "steps": 4}}
PUT = {
    "entrypoint": "reprotrain.examples.nondeterministic:train",
    "params": {"mode": "op", "op": "put_", "steps": 4},
}


def test_strict_records_requested_and_effective_knobs(run_job) -> None:
    """Under strict, torch reports deterministic algorithms, 1 thread, TF32 off, oneDNN deterministic."""
    r, _ = run_job(base_spec())
    eff = r.determinism.effective
    assert r.determinism.requested.deterministic_algorithms == "error"
    assert eff.deterministic_algorithms == "error"
    assert eff.num_threads == 1
    assert eff.cudnn_benchmark is False and eff.cudnn_deterministic is True
    assert eff.allow_tf32 == {"matmul": False, "cudnn": False}
    assert eff.mkldnn_deterministic is True and eff.fill_uninitialized_memory is True
    assert eff.cublas_workspace_config == ":4096:8"
    assert eff.python_hash_seed == "0"
    assert eff.torch_initial_seed == 1234


def test_mkl_reproducibility_mode_reaches_mkl(run_job) -> None:
    """MKL_CBWR set per job takes effect in MKL itself, though the fork server loaded torch before."""
    plain, _ = run_job(base_spec())
    pinned, _ = run_job(base_spec(determinism={"policy": "strict", "mkl_cbwr": "COMPATIBLE"}))
    assert pinned.status == plain.status == "SUCCEEDED"
    assert pinned.determinism.effective.mkl_cbwr == "COMPATIBLE"
    assert pinned.determinism.effective.mkl_cbwr_branch == "COMPATIBLE"
    assert plain.determinism.effective.mkl_cbwr_branch == "OFF"


def test_off_leaves_torch_defaults(run_job) -> None:
    """Under off nothing is switched: deterministic algorithms stay off, no cuBLAS config."""
    r, _ = run_job(base_spec(determinism={"policy": "off"}))
    eff = r.determinism.effective
    assert eff.deterministic_algorithms == "off"
    assert eff.cublas_workspace_config is None
    assert eff.mkldnn_deterministic is False
    assert eff.torch_initial_seed != 1234


def test_strict_fails_on_a_nondeterministic_op_naming_it(run_job) -> None:
    """A real op without a deterministic implementation (put_) fails a strict job, named."""
    r, job_dir = run_job(base_spec(**PUT))
    assert r.status == "FAILED"
    assert r.error.nondeterministic_op == "put_"
    assert "does not have a deterministic implementation" in r.error.message
    assert "put_ does not have" in (job_dir / "stderr.log").read_text()


def test_torch_alert_hook_fails_strict_too(run_job) -> None:
    """torch's own alert_not_deterministic raises under strict exactly as a real op does."""
    r, _ = run_job(base_spec(params={**ALERT["params"], "op": "alert"}, entrypoint=ALERT["entrypoint"]))
    assert r.status == "FAILED" and r.error.nondeterministic_op == "example_op"


def test_warn_runs_and_lists_each_op(run_job) -> None:
    """Under warn the job succeeds and the result lists the op that warned."""
    r, _ = run_job(base_spec(determinism={"policy": "warn"}, **PUT))
    assert r.status == "SUCCEEDED", r.error
    assert [o.op for o in r.nondeterministic_ops] == ["put_"]
    assert r.nondeterministic_ops[0].count == 1


def test_seeded_does_not_police_ops(run_job) -> None:
    """Under seeded the same op neither fails nor is listed: only strict and warn check."""
    r, _ = run_job(base_spec(determinism={"policy": "seeded"}, **PUT))
    assert r.status == "SUCCEEDED" and r.nondeterministic_ops == []


def test_off_with_a_fork_server_is_as_random_as_a_fresh_interpreter(run_job) -> None:
    """Forked children under off do not share the server's RNG streams: two runs differ."""
    spec = base_spec(determinism={"policy": "off"})
    a, _ = run_job(spec)
    b, _ = run_job(spec)
    assert compare(a, b).verdict == "diverged"


def test_job_errors_are_captured(run_job) -> None:
    """An entrypoint that does not exist fails with a message naming it."""
    r, _ = run_job(base_spec(entrypoint="reprotrain.examples.mlp:nope"))
    assert r.status == "FAILED"
    assert "reprotrain.examples.mlp:nope" in r.error.message
