"""The first differing operation: what a bisect or a pre-flight check reports.

Two copies of a job run side by side with op-level recording (`reprotrain.job.oprecord`): every
op's outputs are digested as it returns, in the order the ops ran, forward, backward and the
optimizer's. The report names the first op whose outputs differ between the copies (or where the
copies ran different ops, or one of them ended), with the ops before it that still agreed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from reprotrain.errors import Conflict, NoMatchingWorker
from reprotrain.fingerprint import env_digest
from reprotrain.model import Stored
from reprotrain.routing import run_queue
from reprotrain.spec import MAX_TAGS, JobSpec, inline_python, parse_spec
from reprotrain.verdict import Verdict
from reprotrain.wire import ENV_QUEUE_PREFIX

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
    if r.environment:
        lines.append(f"  across environments: {r.environment}")
    return "\n".join(lines)


def bisect_specs(a: Run, b: Run, verdict: Verdict, live_queues: set[str] | None = None) -> list[JobSpec]:
    """The jobs of a bisect between two runs. In one environment, one job: a's spec run as two
    copies up to the first differing step, against b's spec when it differs. Across environments
    (the runs' static environments differ), two jobs, one per side, each on a queue only workers of
    that side's environment consume; side b's compares (its `partner` is set by `with_partner` once
    side a's job exists). `live_queues`: the queues live workers consume (None: no service, here).
    Conflict when there is nothing a bisect can find or nowhere to run it."""
    step, spec_a, spec_b = _bisectable(a, b, verdict)
    across = a.queue is not None and b.queue is not None and a.queue != b.queue
    if not across:
        data = _bisect_data(spec_a, step, a, b)
        if a.spec_digest != b.spec_digest:
            data["bisect"]["against"] = spec_b.canonical()
        if live_queues is not None and a.queue in live_queues:
            data["queue"] = a.queue  # where both runs ran
        return [parse_spec(data)]
    if live_queues is None:
        raise Conflict(
            "the runs' static environments differ (see their compare); a bisect across environments "
            "runs one side on a worker of each, so it needs the service: POST /v1/jobs/{a}/bisect/{b}"
        )
    sides = []
    for side, run, spec in (("a", a, spec_a), ("b", b, spec_b)):
        queue = str(run.queue)
        if queue not in live_queues:
            envs = sorted(q for q in live_queues if q.startswith(ENV_QUEUE_PREFIX))
            raise NoMatchingWorker(
                f"no live worker has the environment job {side} ran in ({queue}); the live workers' "
                f"environments: {', '.join(envs) or 'none'}. Start a worker of that environment "
                "(reprotrain workers lists them)"
            )
        data = _bisect_data(spec, step, a, b)
        data["name"] = f"{data['name']}-{side}"[:200]
        data["queue"] = queue
        data["bisect"].update({"side": side, "partner": PENDING if side == "b" else None})
        sides.append(parse_spec(data))
    return sides


def with_partner(side_b: JobSpec, partner: str) -> JobSpec:
    """Side b's spec, naming side a's job (which it waits for and compares against)."""
    data = side_b.canonical()
    data["bisect"]["partner"] = partner
    return parse_spec(data)


PENDING = "pending"


def _bisectable(a: Run, b: Run, verdict: Verdict) -> tuple[int | None, JobSpec, JobSpec]:
    """The step to record up to (None: the whole run, for runs that log no steps, such as an
    unchanged script whose outputs differ) and the two specs; Conflict when there is none."""
    if verdict.verdict == "incomparable":
        raise Conflict(f"cannot bisect: the runs are incomparable ({verdict.reason})")
    step = verdict.divergence.step if verdict.divergence else None
    whole = verdict.verdict == "diverged" and step is None and not (a.steps or b.steps)
    if (verdict.verdict != "diverged" or step is None) and not whole:
        what = "their traces agree" if verdict.verdict == "diverged" else f"the verdict is {verdict.verdict}"
        raise Conflict(f"nothing to bisect: {what}; a bisect needs the first logged step where the runs part")
    spec_a, spec_b = parse_spec(a.spec), parse_spec(b.spec)
    if spec_a.bisect is not None or spec_b.bisect is not None:
        raise Conflict("cannot bisect a bisect job")
    for field in ("bundle", "entrypoint", "command"):
        if getattr(spec_a, field) != getattr(spec_b, field):
            raise Conflict(f"a bisect compares two runs of the same code; the runs' {field}s differ")
    if a.code is not None and b.code is not None and a.code != b.code:
        raise Conflict(
            "a bisect compares two runs of the same code; the files the runs ran from differ "
            "(their compare names them)"
        )
    return step, spec_a, spec_b


def _bisect_data(spec: JobSpec, step: int | None, a: Run, b: Run) -> dict[str, Any]:
    data = spec.canonical()
    data["name"] = f"bisect-{spec.name}"[:200]
    data["tags"] = list(dict.fromkeys([*spec.tags, "bisect"]))[:MAX_TAGS]
    data["determinism"].pop("preflight", None)
    data["bisect"] = {"a": a.id, "b": b.id, "until_step": step}
    return data


CODE_CAUSES = ("spec.bundle", "spec.entrypoint", "spec.command", "code")  # a bisect refuses these


def bisect_offered(v: Verdict, spec: dict[str, Any] | None = None) -> bool:
    """Whether a bisect of the verdict's runs can find something: they part at a step, or logged
    no steps and differ (recorded whole); they ran the same code (no cause among CODE_CAUSES);
    and, `spec` being run a's, a script runs as Python in its job process (what op recording
    needs). What `bisect_specs` would refuse is not offered."""
    at_step = v.divergence is not None and v.divergence.step is not None
    if v.verdict != "diverged" or not (at_step or "trace" in (v.absent or [])):
        return False
    if any(c.key.split("/")[0] in CODE_CAUSES for c in v.causes):
        return False
    command = (spec or {}).get("command")
    return not (isinstance(command, list) and not inline_python(command))


def offer_bisect(v: Verdict, spec: dict[str, Any] | None = None) -> Verdict:
    """The verdict, with the route that bisects its runs where `bisect_offered` says so."""
    if bisect_offered(v, spec):
        return v.model_copy(update={"bisect": f"/v1/jobs/{v.a}/bisect/{v.b}"})
    return v


class Run(Stored):
    """What a bisect needs of a stored run."""

    id: str
    spec: dict
    spec_digest: str
    env_digest: str | None = None
    queue: str | None = Field(None, description="its environment's queue (`reprotrain.routing.run_queue`)")
    steps: int = Field(0, description="how many steps it logged (its trace's length)")
    code: str | None = Field(None, description="the digest of the code it ran from, where recorded")

    @classmethod
    def of(
        cls, id: str, spec: dict, spec_digest: str, fingerprint: dict | None, steps: int = 0,
        code: str | None = None,
    ) -> Run:  # fmt: skip
        fp = fingerprint or {}
        return cls(
            id=id, spec=spec, spec_digest=spec_digest,
            env_digest=env_digest(fp) if fp else None,
            queue=run_queue(fp), steps=steps, code=code,
        )  # fmt: skip
