"""Determinism policies resolve to their table (README, "Determinism policies"), with per-knob overrides."""

from __future__ import annotations

from reprotrain.policy import resolve
from reprotrain.spec import DeterminismSpec


def test_off_touches_nothing_but_the_hash_seed() -> None:
    """Policy off seeds nothing and leaves every torch knob at its default."""
    k = resolve(DeterminismSpec(policy="off"))
    assert not k.seed_rngs and not k.seed_dataloader
    assert k.deterministic_algorithms is None and k.cudnn_benchmark is None
    assert k.env() == {"PYTHONHASHSEED": "0"}


def test_seeded_seeds_and_pins_threads_but_allows_nondeterministic_ops() -> None:
    """Seeded: RNGs, DataLoader, benchmark off, threads pinned; no deterministic algorithms."""
    k = resolve(DeterminismSpec(policy="seeded"))
    assert k.seed_rngs and k.seed_dataloader
    assert k.cudnn_benchmark is False and k.num_threads == 1
    assert k.deterministic_algorithms is None and k.cudnn_deterministic is None
    assert k.source_date_epoch is not None


def test_strict_and_warn_differ_only_in_the_algorithm_mode() -> None:
    """Strict errors on nondeterministic ops, warn records them; all else is the same."""
    strict = resolve(DeterminismSpec(policy="strict")).model_dump()
    warn = resolve(DeterminismSpec(policy="warn")).model_dump()
    assert strict.pop("deterministic_algorithms") == "error"
    assert warn.pop("deterministic_algorithms") == "warn"
    strict.pop("policy"), warn.pop("policy")
    assert strict == warn
    assert strict["cublas_workspace_config"] == ":4096:8"
    assert strict["allow_tf32"] is False and strict["mkldnn_deterministic"] is True
    assert strict["fill_uninitialized_memory"] is True and strict["cudnn_deterministic"] is True


def test_overrides_win_over_the_policy() -> None:
    """An explicit knob in the spec replaces the policy's value."""
    k = resolve(DeterminismSpec(policy="strict", num_threads=4, allow_tf32=True, mkl_cbwr="COMPATIBLE"))
    assert k.num_threads == 4 and k.allow_tf32 is True
    assert k.env()["MKL_CBWR"] == "COMPATIBLE"
    assert k.env()["OMP_NUM_THREADS"] == "4"
