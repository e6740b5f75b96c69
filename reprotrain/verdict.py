"""The verdict model: what a comparison of two runs says, as stored, served and printed.

identical          every digest equal: trace, model, optimizer, output files, stdout, stderr
results_identical  every result is equal; only incidental outputs differ (each listed, with why)
metrics_identical  the (non-empty) trace is equal, some other result differs
diverged           the first differing step and tensor, or the first differing file
incomparable       a side did not succeed (or has no result yet)

Stored and served without its unset fields (`Sparse`): a field present is a finding.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from reprotrain.model import Sparse, Stored

VerdictKind = Literal["identical", "results_identical", "metrics_identical", "diverged", "incomparable"]
FileState = Literal["same", "differs", "only_a", "only_b"]


class Cause(Stored):
    """One difference of spec or environment between the two runs, labelled."""

    key: str = Field(examples=["determinism.num_threads"])
    a: Any
    b: Any
    label: str = Field(examples=["thread count"])
    likely_cause: bool = Field(description="likely to change result bits")


class MetricDelta(Sparse):
    a: Any
    b: Any
    abs: float | None = None
    rel: float | None = None


class Incidental(Sparse):
    """An output that differs without making the run diverge, and why it is classed so."""

    what: str = Field(examples=["out/events.out.tfevents.1795830033.vm.11141.0", "stdout"])
    state: Literal["differs", "only_a", "only_b"]
    reason: str = Field(examples=["TensorBoard event file"])


class LineDiff(Sparse):
    """The first line of a log that differs: only in noise (times, durations, …), or for real."""

    stream: Literal["stdout", "stderr"]
    line: int
    a: str | None = Field(description="None: a's log ended before this line")
    b: str | None
    noise: bool


class CheckpointDiff(Sparse):
    """Two checkpoint files whose bytes differ, opened and compared tensor by tensor."""

    file: str
    tensors: int | None = Field(None, description="tensors compared")
    first_tensor: dict[str, Any] | None = Field(None, description="key path, max_abs, max_rel")
    fields: list[dict[str, Any]] | None = Field(None, description="non-tensor values that differ (first 20)")
    real_field: dict[str, Any] | None = Field(
        None, description="the first differing value that is not a path"
    )
    structure: list[dict[str, Any]] | None = Field(None, description="keys or types on one side only")
    error: str | None = Field(None, description="why the files were not opened")


class Divergence(Sparse):
    """Where a diverged re-run first parted from its original, and by how much."""

    step: int | None = Field(None, description="first logged step whose entry differs")
    differs: list[str] = Field(default_factory=list, description="what differs there (or overall)")
    metrics: dict[str, MetricDelta] | None = None
    first: str | None = Field(None, description="'data order' when the batch order parted first")
    note: str | None = None
    tensor: str | None = Field(None, description="first differing tensor, in the model's own order")
    tensor_step: int | None = None
    tensor_file: str | None = Field(None, description="the checkpoint file the tensor is in (script mode)")
    tensor_max_abs: float | None = None
    tensor_max_rel: float | None = None
    file: str | None = Field(None, description="first differing output file, when no step differs")
    max_abs: float | None = None
    max_rel: float | None = None


class Verdict(Sparse):
    """The verdict of run b (a re-run) against run a (the original)."""

    a: str
    b: str
    verdict: VerdictKind
    reason: str | None = None
    causes: list[Cause] = Field(default_factory=list)
    likely_causes: list[str] = Field(default_factory=list)
    files: dict[str, FileState] | None = None
    equal: dict[str, bool] | None = Field(
        None, description="each component either run has: trace, metrics, model, optimizer, files, stdout"
    )
    identical: list[str] | None = Field(
        None, description="the results that are bit-identical: components, then output files by name"
    )
    incidental: list[Incidental] | None = None
    lines: list[LineDiff] | None = Field(None, description="first differing line of each log that differs")
    checkpoints: list[CheckpointDiff] | None = None
    absent: list[str] | None = Field(
        None, description="components neither run has (not tracked, not produced)"
    )
    nondeterministic_ops: list[str] | None = None
    divergence: Divergence | None = None
    notes: list[str] | None = Field(None, description="what else the runs say (a job that seeds itself)")
    cross_environment: bool | None = Field(
        None,
        description="the runs ran in different environments (static facts; with CUDA, the GPUs and "
        "driver too): the verdict compares two environments, it does not check a re-run of one",
    )
    bisect: str | None = Field(
        None,
        description="for runs that part at a step: the route that starts a bisect, which names the "
        "first differing op (POST)",
    )


def incomparable(a: str, b: str, reason: str) -> Verdict:
    return Verdict(a=a, b=b, verdict="incomparable", reason=reason)
