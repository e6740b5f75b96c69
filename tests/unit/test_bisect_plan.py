"""Which jobs a bisect makes, and where they may run (reprotrain.bisect.bisect_specs): pure logic."""

from __future__ import annotations

import pytest

from reprotrain.bisect import Run, bisect_specs, offer_bisect, with_partner
from reprotrain.errors import Conflict, NoMatchingWorker
from reprotrain.spec import parse_spec
from reprotrain.verdict import Cause, Divergence, Verdict
from reprotrain.wire import env_queue

SPEC = parse_spec({"name": "mlp", "entrypoint": "reprotrain.examples.mlp:train", "seed": 1}).canonical()
ENV_A, ENV_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def run(id: str, static: str | None, steps: int = 5, **spec: object) -> Run:
    data = {**SPEC, **spec}
    queue = env_queue(static) if static else None
    return Run(id=id, spec=data, spec_digest=parse_spec(data).digest, queue=queue, steps=steps)


def diverged(step: int | None = 2, absent: list[str] | None = None) -> Verdict:
    return Verdict(a="a", b="b", verdict="diverged", divergence=Divergence(step=step), absent=absent)


def test_one_environment_makes_one_pair_job_on_its_queue_when_a_worker_has_it() -> None:
    (spec,) = bisect_specs(run("a", ENV_A), run("b", ENV_A), diverged(), {env_queue(ENV_A), "default"})
    assert spec.bisect.side is None and spec.bisect.until_step == 2 and spec.queue == env_queue(ENV_A)
    (spec,) = bisect_specs(run("a", ENV_A), run("b", ENV_A), diverged(), {"default"})
    assert spec.queue == "default"  # no worker of that environment alive: the job's own queue


def test_two_environments_make_a_side_on_each_environment_queue() -> None:
    live = {env_queue(ENV_A), env_queue(ENV_B)}
    a, b = bisect_specs(run("a", ENV_A), run("b", ENV_B, seed=2), diverged(), live)
    assert (a.bisect.side, a.queue, a.seed) == ("a", env_queue(ENV_A), 1)
    assert (b.bisect.side, b.queue, b.seed) == ("b", env_queue(ENV_B), 2)  # each side its own spec
    assert with_partner(b, "job-a").bisect.partner == "job-a" and a.bisect.partner is None
    assert a.name == "bisect-mlp-a" and "bisect" in b.tags


def test_a_side_whose_environment_has_no_live_worker_is_refused_naming_the_live_ones() -> None:
    with pytest.raises(NoMatchingWorker) as e:
        bisect_specs(run("a", ENV_A), run("b", ENV_B), diverged(), {env_queue(ENV_A), "default"})
    assert e.value.code == "no_matching_worker"
    assert env_queue(ENV_B) in e.value.message and env_queue(ENV_A) in e.value.message
    with pytest.raises(Conflict, match="needs the service"):  # here, locally: one environment
        bisect_specs(run("a", ENV_A), run("b", ENV_B), diverged(), None)


def test_runs_that_log_no_steps_are_bisected_whole_and_others_need_a_step() -> None:
    no_trace = diverged(step=None, absent=["trace"])
    (spec,) = bisect_specs(run("a", ENV_A, steps=0), run("b", ENV_A, steps=0), no_trace)
    assert spec.bisect.until_step is None
    assert offer_bisect(no_trace).bisect == "/v1/jobs/a/bisect/b"
    with pytest.raises(Conflict, match="nothing to bisect"):
        bisect_specs(run("a", ENV_A), run("b", ENV_A), diverged(step=None))
    assert offer_bisect(diverged(step=None)).bisect is None


def test_side_specs_are_checked() -> None:
    base = {**SPEC, "bisect": {"until_step": 1, "side": "b"}}
    with pytest.raises(Exception, match="partner"):
        parse_spec(base)
    with pytest.raises(Exception, match="partner"):
        parse_spec({**SPEC, "bisect": {"until_step": 1, "partner": "x"}})
    assert "side" not in parse_spec({**SPEC, "bisect": {"until_step": 1}}).canonical()["bisect"]


def test_runs_of_other_code_are_neither_bisected_nor_offered() -> None:
    """Code that differs (a file of the copy, the bundle, the command) makes bisect refuse, and the
    verdict offers no bisect; nor for a script whose command is not Python run in place."""

    def of(id: str, code: str) -> Run:
        return run(id, ENV_A).model_copy(update={"code": code})

    with pytest.raises(Conflict, match="the files the runs ran from differ"):
        bisect_specs(of("a", "c1"), of("b", "c2"), diverged())
    with pytest.raises(Conflict, match="the runs' bundles differ"):
        bisect_specs(run("a", ENV_A), run("b", ENV_A, bundle="sha256:" + "c" * 64), diverged())
    (spec,) = bisect_specs(of("a", "c1"), of("b", "c1"), diverged())
    assert spec.bisect.until_step == 2
    assert offer_bisect(diverged()).bisect == "/v1/jobs/a/bisect/b"
    for key in ("code/train.py", "code", "spec.bundle", "spec.command", "spec.entrypoint"):
        cause = Cause(key=key, a="x", b="y", label="code", likely_cause=True)
        assert offer_bisect(diverged().model_copy(update={"causes": [cause]})).bisect is None, key
    seed = Cause(key="spec.seed", a=1, b=2, label="seed", likely_cause=True)
    assert offer_bisect(diverged().model_copy(update={"causes": [seed]})).bisect is not None
    assert offer_bisect(diverged(), {"command": ["sh", "-c", "python train.py"]}).bisect is None
    assert offer_bisect(diverged(), {"command": ["python", "train.py"]}).bisect is not None
