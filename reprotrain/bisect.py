"""The first differing operation: what a bisect or a pre-flight check reports.

Two copies of a job run side by side with op-level recording (`reprotrain.job.oprecord`): every
op's outputs are digested as it returns, in the order the ops ran, forward, backward and the
optimizer's. The report names the first op whose outputs differ between the copies (or where the
copies ran different ops, or one of them ended), with the ops before it that still agreed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from reprotrain.errors import Conflict
from reprotrain.model import Stored
from reprotrain.spec import MAX_TAGS, JobSpec, parse_spec
from reprotrain.verdict import Verdict

Phase = Literal["forward", "backward", "optimizer", "other"]
Found = Literal["op", "sequence", "metrics", "ended", "none"]


class OpInfo(Stored):
    """One recorded op call."""

    seq: int = Field(description="its position among the recorded ops, from 0")
    step: int | None = Field(None, description="the step it belongs to: the next one logged")
    op: str = Field(examples=["aten::addmm", "mylib::noisy_add"])
    phase: Phase = "other"
    module: str | None = Field(None, description="the module path that called it, e.g. encoder.layers.3")
    node: str | None = Field(None, description="in backward: the autograd node that ran it")
    source: str | None = Field(None, description="the user source line that led to it, file:line")
    inputs: list[str] = Field(default_factory=list, examples=[["float32[8, 16]"]])
    outputs: list[str] = Field(default_factory=list)


class OutputDiff(Stored):
    """How one output of the first differing op differs between the copies."""

    index: int
    dtype: str
    shape: list[int]
    differing: int = Field(description="elements whose bits differ")
    total: int
    max_abs: float | str | None = Field(None, description="a float; NaN and infinities as strings")
    max_rel: float | str | None = None
    note: str | None = None


class BisectReport(Stored):
    """The first op where two copies of a run part, or that none did within the steps recorded."""

    found: Found
    summary: str
    step: int | None = None
    first: OpInfo | None = Field(None, description="the first op whose outputs differ (copy a's)")
    other: OpInfo | None = Field(None, description="copy b's op there, when the copies ran different ops")
    outputs: list[OutputDiff] = Field(default_factory=list)
    before: list[OpInfo] = Field(default_factory=list, description="the ops just before it, which agreed")
    ops_compared: int = Field(0, description="ops recorded on both sides that agreed")
    steps_compared: int = Field(0, description="logged steps recorded on both sides")
    seconds: float = 0.0
    errors: dict[str, str] = Field(default_factory=dict, description="a copy that failed: its error")
    a: str | None = Field(None, description="for a bisect of two jobs: the first job's id")
    b: str | None = None
    environment: str | None = Field(None, description="what the two copies' environments were")


class PreflightRecord(Stored):
    """What a passed pre-flight check compared before the run."""

    steps: int
    ops: int
    seconds: float


def _num(v: float | str | None) -> str:
    return f"{v:.3g}" if isinstance(v, float | int) else str(v)


def describe(r: BisectReport) -> str:
    """The report in a few lines, for a terminal or an error message."""
    lines = [r.summary]
    if r.first is not None:
        f = r.first
        lines.append(f"  op       {f.op}  ({f.phase}{', node ' + f.node if f.node else ''})")
        if f.module:
            lines.append(f"  module   {f.module}")
        if f.source:
            lines.append(f"  source   {f.source}")
        if f.inputs:
            lines.append(f"  inputs   {', '.join(f.inputs)}")
        for d in r.outputs:
            diff = f"{d.differing} of {d.total} elements differ"
            if d.max_abs is not None:
                diff += f", max abs {_num(d.max_abs)}, max rel {_num(d.max_rel)}"
            shape = ", ".join(map(str, d.shape))
            lines.append(f"  output {d.index} {d.dtype}[{shape}]: {diff}{'; ' + d.note if d.note else ''}")
    if r.other is not None:
        lines.append(f"  copy b ran {r.other.op} in {r.other.module or '-'} instead")
    if r.before:
        lines.append(f"  the {len(r.before)} ops before it agreed:")
        for o in r.before:
            where = o.module or o.node or "-"
            lines.append(f"    #{o.seq} {o.op:<28} {o.phase:<9} {where}")
    for side, err in r.errors.items():
        lines.append(f"  copy {side} failed: {err}")
    return "\n".join(lines)


def bisect_spec(a: Run, b: Run, verdict: Verdict) -> JobSpec:
    """The spec of a bisect job between two runs: a's spec, recorded up to the first differing
    step, against b's spec when it differs. Conflict when there is nothing a bisect can find."""
    if verdict.verdict == "incomparable":
        raise Conflict(f"cannot bisect: the runs are incomparable ({verdict.reason})")
    step = verdict.divergence.step if verdict.divergence else None
    if verdict.verdict != "diverged" or step is None:
        what = "their traces agree" if verdict.verdict == "diverged" else f"the verdict is {verdict.verdict}"
        raise Conflict(f"nothing to bisect: {what}; a bisect needs the first logged step where the runs part")
    spec_a, spec_b = parse_spec(a.spec), parse_spec(b.spec)
    if spec_a.bisect is not None or spec_b.bisect is not None:
        raise Conflict("cannot bisect a bisect job")
    for field in ("bundle", "entrypoint", "command"):
        if getattr(spec_a, field) != getattr(spec_b, field):
            raise Conflict(f"a bisect compares two runs of the same code; the runs' {field} differ")
    if a.env_digest and b.env_digest and a.env_digest != b.env_digest:
        raise Conflict(
            "the runs' environments differ (see their compare); a bisect runs both copies on one "
            "worker, where an environment difference cannot show: re-run a there and bisect a "
            "against that re-run"
        )
    against = None if a.spec_digest == b.spec_digest else spec_b
    data = spec_a.canonical()
    data["name"] = f"bisect-{spec_a.name}"[:200]
    data["tags"] = list(dict.fromkeys([*spec_a.tags, "bisect"]))[:MAX_TAGS]
    data["determinism"].pop("preflight", None)
    data["bisect"] = {"a": a.id, "b": b.id, "until_step": step}
    if against is not None:
        data["bisect"]["against"] = against.canonical()
    return parse_spec(data)


def offer_bisect(v: Verdict) -> Verdict:
    """A verdict whose runs part at a step, with the route that bisects them."""
    if v.verdict == "diverged" and v.divergence is not None and v.divergence.step is not None:
        return v.model_copy(update={"bisect": f"/v1/jobs/{v.a}/bisect/{v.b}"})
    return v


class Run(Stored):
    """What a bisect needs of a stored run."""

    id: str
    spec: dict
    spec_digest: str
    env_digest: str | None = None
