"""Determinism policies: which knob each policy turns, resolved with a spec's overrides.

README.md, "Determinism policies", shows this table. A knob left at None is not touched: the
process keeps torch's default, and the result still records what that default was (the
*effective* value).
"""

from __future__ import annotations

from typing import Literal

from reprotrain.model import Frozen
from reprotrain.spec import DeterminismSpec

PYTHON_HASH_SEED = "0"  # fixed for every policy; forked children inherit the parent's
SOURCE_DATE_EPOCH = 315532800  # 1980-01-01, the earliest date a zip entry can carry
CUBLAS_DEFAULT = ":4096:8"
DEFAULT_THREADS = 1  # the same on every host: thread count changes result bits on CPU


class Knobs(Frozen):
    """The requested value of every determinism knob for one job."""

    policy: Literal["off", "seeded", "strict", "warn"]
    seed_rngs: bool
    seed_dataloader: bool
    python_hash_seed: str = PYTHON_HASH_SEED
    cudnn_benchmark: bool | None = None
    cudnn_deterministic: bool | None = None
    deterministic_algorithms: Literal["error", "warn"] | None = None
    cublas_workspace_config: str | None = None
    fill_uninitialized_memory: bool | None = None
    num_threads: int | None = None
    allow_tf32: bool | None = None
    mkldnn_deterministic: bool | None = None
    mkl_cbwr: str | None = None
    source_date_epoch: int | None = None
    sdpa_math_only: bool | None = None

    def env(self) -> dict[str, str]:
        """Environment variables this job's processes must start with."""
        env = {"PYTHONHASHSEED": self.python_hash_seed}
        if self.cublas_workspace_config:
            env["CUBLAS_WORKSPACE_CONFIG"] = self.cublas_workspace_config
        if self.source_date_epoch is not None:
            env["SOURCE_DATE_EPOCH"] = str(self.source_date_epoch)
        if self.mkl_cbwr:
            env["MKL_CBWR"] = self.mkl_cbwr
        if self.num_threads is not None:  # also pins OpenMP in subprocesses the job starts
            env["OMP_NUM_THREADS"] = str(self.num_threads)
            env["MKL_NUM_THREADS"] = str(self.num_threads)
        return env


_SEEDED = {
    "seed_rngs": True,
    "seed_dataloader": True,
    "cudnn_benchmark": False,
    "num_threads": DEFAULT_THREADS,
    "source_date_epoch": SOURCE_DATE_EPOCH,
}
_STRICT = {
    **_SEEDED,
    "cudnn_deterministic": True,
    "deterministic_algorithms": "error",
    "cublas_workspace_config": CUBLAS_DEFAULT,
    "fill_uninitialized_memory": True,
    "allow_tf32": False,
    "mkldnn_deterministic": True,
}
_TABLE: dict[str, dict[str, object]] = {
    "off": {"seed_rngs": False, "seed_dataloader": False},
    "seeded": _SEEDED,
    "strict": _STRICT,
    "warn": {**_STRICT, "deterministic_algorithms": "warn"},
}
OVERRIDABLE = (
    "cudnn_benchmark",
    "allow_tf32",
    "num_threads",
    "fill_uninitialized_memory",
    "sdpa_math_only",
    "cublas_workspace_config",
    "mkl_cbwr",
)


def resolve(spec: DeterminismSpec) -> Knobs:
    """The policy's row of the table, with the spec's explicit overrides on top."""
    values = dict(_TABLE[spec.policy])
    for knob in OVERRIDABLE:
        override = getattr(spec, knob)
        if override is not None:
            values[knob] = override
    return Knobs(policy=spec.policy, **values)
