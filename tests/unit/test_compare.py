"""The verdict logic, on hand-built results (no job processes)."""

from __future__ import annotations

from typing import Any

from reprotrain.compare import compare
from reprotrain.diffs import same_value, step_kind_of
from reprotrain.result import Result
from tests.helpers import fingerprint_dict


def raw(**kw: Any) -> dict[str, Any]:
    """A stored result as JSON, for tests to change before it is read."""
    base: dict[str, Any] = {
        "job_id": "a",
        "name": "t",
        "spec": {"seed": 1, "params": {}},
        "spec_digest": "d",
        "status": "SUCCEEDED",
        "metrics": {"loss": 0.5},
        "trace": [{"step": s, "metrics": {"loss": 1.0 / (s + 1)}, "params": f"p{s}"} for s in range(4)],
        "param_digests": [
            {"step": s, "overall": f"p{s}", "tensors": {"w": f"w{s}", "b": f"b{s}"}} for s in range(4)
        ],
        "digests": {
            "model": {"overall": "m", "tensors": {"w": "w3", "b": "b3"}},
            "files": {"overall": "f", "files": {"out.txt": {"size": 1, "digest": "x"}}},
            "stdout": "s",
        },
        "fingerprint": fingerprint_dict(),
    }
    base.update(kw)
    return base


def result(**kw: Any) -> Result:
    return Result.model_validate(raw(**kw))


def test_identical_when_everything_matches() -> None:
    """Two equal results are identical, and host names alone are not causes."""
    b = result(job_id="b", fingerprint=fingerprint_dict(host={"hostname": "h2", "pid": 7}))
    v = compare(result(), b)
    assert v.verdict == "identical"
    assert v.likely_causes == []
    assert {(c.key, c.label) for c in v.causes} == {
        ("host.hostname", "host identity"),
        ("host.pid", "host identity"),
    }


def test_first_differing_step_and_tensor_are_named() -> None:
    """A parameter change at step 2 gives diverged at step 2, naming tensor b."""
    d = raw()
    d["trace"][2]["params"] = "other"
    d["param_digests"][2]["overall"] = "other"
    d["param_digests"][2]["tensors"]["b"] = "changed"
    v = compare(result(), Result.model_validate(d))
    assert v.verdict == "diverged"
    assert v.divergence.step == 2
    assert v.divergence.tensor == "b"
    assert v.divergence.differs == ["parameters"]


def test_metric_difference_reports_abs_and_rel() -> None:
    """A metric that differs at step 1 gives its absolute and relative difference."""
    d = raw()
    d["trace"][1]["metrics"]["loss"] = 0.75
    v = compare(result(), Result.model_validate(d))
    div = v.divergence
    assert div.step == 1 and div.metrics["loss"].abs == 0.25
    assert div.max_rel == 0.25 / 0.75


def test_metrics_identical_when_only_a_file_differs() -> None:
    """Equal trace but a differing output file is metrics_identical, with the file marked."""
    b = result(
        digests={
            **result().digests,
            "files": {
                "overall": "g",
                "files": {"out.txt": {"size": 1, "digest": "y"}, "new.txt": {"size": 1, "digest": "z"}},
            },
        }
    )
    v = compare(result(), b)
    assert v.verdict == "metrics_identical"
    assert v.files == {"new.txt": "only_b", "out.txt": "differs"}


def test_no_trace_and_differing_file_is_diverged_naming_the_file() -> None:
    """Without a trace to compare, a differing output makes the verdict diverged, naming it."""
    a = result(trace=[], param_digests=[])
    b = result(trace=[], param_digests=[], digests={**a.digests, "stdout": "other"})
    v = compare(a, b)
    assert v.verdict == "diverged"
    assert v.divergence.differs == ["stdout"]


def test_failed_side_is_incomparable() -> None:
    """A failed re-run cannot be compared."""
    v = compare(result(), result(status="FAILED"))
    assert v.verdict == "incomparable" and "b FAILED" in v.reason


def test_causes_name_seed_and_thread_count() -> None:
    """A different seed and thread count are listed as likely causes."""
    knobs = {**fingerprint_dict()["determinism"], "num_threads": 4}
    d = raw(spec={"seed": 2, "params": {}}, fingerprint=fingerprint_dict(determinism=knobs))
    d["trace"][0]["metrics"]["loss"] = 0.9
    v = compare(result(), Result.model_validate(d))
    assert "seed" in v.likely_causes and "thread count" in v.likely_causes


def test_float_equality_is_bitwise() -> None:
    """-0.0 and 0.0 differ; NaN equals NaN; an int is not its float."""
    assert not same_value(0.0, -0.0)
    assert same_value(float("nan"), float("nan"))
    assert not same_value(1, 1.0)


def test_image_build_date_alone_is_not_a_cause() -> None:
    """Two builds of the same image differ only in build date: not a likely cause, same env digest."""
    from reprotrain.fingerprint import env_digest

    image = {
        "schema": 1,
        "target": "worker",
        "base_image": "cuda@sha256:" + "a" * 64,
        "base_image_digest": "sha256:" + "a" * 64,
        "python_image": None,
        "python_image_digest": None,
        "requirements_lock_sha256": "sha256:x",
        "locks": {"requirements.lock": "x"},
        "torch": "2.13.0",
        "torch_index": None,
        "reprotrain": "0.1.0",
        "os_packages": {"count": 100, "digest": "sha256:o"},
        "vcs_ref": None,
        "build_date": "2026-01-01T00:00:00Z",
        "build_date_source": "SOURCE_DATE_EPOCH",
    }
    fa = fingerprint_dict(image=image)
    fb = {**fa, "image": {**image, "build_date": "2026-02-02T00:00:00Z", "build_date_source": "clock"}}
    v = compare(result(fingerprint=fa), result(fingerprint=fb))
    assert v.likely_causes == [] and v.verdict == "identical"
    assert env_digest(fa) == env_digest(fb)
    fc = {**fa, "image": {**fa["image"], "locks": {"requirements.lock": "y"}}}
    assert "container image" in compare(result(fingerprint=fa), result(fingerprint=fc)).likely_causes


def test_what_neither_run_has_is_absent_not_equal() -> None:
    """A script run without metrics, trace or tracked model: those are absent, only files/stdout equal."""
    bare = {"trace": [], "param_digests": [], "metrics": {}, "digests": {**raw()["digests"], "model": None}}
    bare["digests"].pop("model")
    v = compare(result(**bare), result(**bare))
    assert v.verdict == "identical"
    assert set(v.equal) == {"files", "stdout"} and all(v.equal.values())
    assert set(v.absent) == {"trace", "metrics", "model", "optimizer", "stderr"}


def test_both_unseeded_is_named_as_the_cause() -> None:
    """Two policy-off runs that differ: 'not seeded (policy off)' leads the likely causes."""
    off = {"seed": None, "params": {}, "determinism": {"policy": "off"}}
    d = raw(spec=off)
    d["trace"][0]["metrics"]["loss"] = 0.9
    v = compare(result(spec=off), Result.model_validate(d))
    assert v.verdict == "diverged" and v.likely_causes[0] == "not seeded (policy off)"


def test_a_job_that_seeds_itself_is_noted() -> None:
    """A torch seed other than the spec's (a script's own manual_seed) is noted for each side."""
    record = {
        "policy": "strict",
        "requested": {"policy": "strict", "seed_rngs": True, "seed_dataloader": True},
        "effective": {**fingerprint_dict()["determinism"], "torch_initial_seed": 3407},
    }
    v = compare(result(determinism=record), result(determinism=record))
    assert v.notes == [
        "a: the job seeds torch itself (torch seed 3407; spec seed 1)",
        "b: the job seeds torch itself (torch seed 3407; spec seed 1)",
    ]


def test_a_file_renamed_by_a_time_is_compared_by_content() -> None:
    """Hydra's dated directory in each run: the same bytes under two names are results_identical;
    different bytes are a difference, named."""

    def run(job_id: str, name: str, digest: str) -> Result:
        files = {name: {"size": 1, "digest": digest}}
        return result(
            job_id=job_id, digests={**raw()["digests"], "files": {"overall": digest + name, "files": files}}
        )

    a = run("a", "outputs/2024-05-01/12-30-45/model.pt", "x")
    v = compare(a, run("b", "outputs/2024-05-01/12-31-02/model.pt", "x"))
    assert v.verdict == "results_identical"
    assert v.incidental[0].reason.startswith("renamed by a time")
    v = compare(a, run("b", "outputs/2024-05-01/12-31-02/model.pt", "y"))
    assert v.verdict == "metrics_identical" and "outputs/2024-05-01/12-30-45/model.pt" in v.reason


def _traced(kind: str, changed_at: int | None = None) -> dict[str, Any]:
    """A result whose per-step digests are of `kind` (a prefix), one changed at a step."""
    d = raw()
    for s in range(4):
        tag = "x" if s == changed_at else ""
        d["trace"][s]["params"] = f"{kind}:p{s}{tag}"
        digests = {"overall": f"{kind}:p{s}{tag}", "tensors": {"w": f"{kind}:w{s}{tag}"}}
        d["param_digests"][s] = {"step": s, **digests}
    return d


def test_per_step_digests_of_different_kinds_are_not_compared() -> None:
    """A trace stored with blake3 per-step digests, re-run with xxh3 ones: the same run, said
    identical (the final state decides), with a note naming both kinds; never diverged."""
    v = compare(result(), Result.model_validate(_traced("xxh3") | {"job_id": "b"}))
    assert v.verdict == "identical"
    assert any("different kinds (blake3 vs xxh3)" in n for n in v.notes or [])


def test_mixed_traces_with_tensors_placed_otherwise_are_not_compared() -> None:
    """Runs with tensors on the host and the GPU, one buffer on the host in one run and on the GPU
    in the other: their mixed kinds differ (the tag), so the digests, bound to differ, are not
    compared: identical with a note, never diverged. Placed alike, a change still localises."""
    gpu = {"w": "sum64:1", "b": "sum64:2", "buf": "sum64:3"}
    host_buf = gpu | {"buf": "xxh3:3"}
    one, other = step_kind_of(gpu | {"n": "xxh3:0"}), step_kind_of(host_buf)
    assert one.startswith("mixed.") and other.startswith("mixed.") and one != other
    assert step_kind_of(host_buf) == step_kind_of(dict(reversed(host_buf.items())))  # order: no matter
    v = compare(result(**_traced(one)), Result.model_validate(_traced(other, changed_at=0)))
    assert v.verdict == "identical"
    assert any("host and GPU tensors in other places" in n for n in v.notes or [])
    v = compare(result(**_traced(one)), Result.model_validate(_traced(one, changed_at=2)))
    assert v.verdict == "diverged" and (v.divergence.step, v.divergence.tensor) == (2, "w")


def test_per_step_digests_of_one_kind_still_localise() -> None:
    """Of one kind, a per-step digest that differs still names its step and tensor."""
    v = compare(result(**_traced("xxh3")), Result.model_validate(_traced("xxh3", changed_at=1)))
    assert v.verdict == "diverged"
    assert (v.divergence.step, v.divergence.tensor) == (1, "w")
    assert not any("different kinds" in n for n in v.notes or [])


def _code(**tree: str) -> dict[str, Any]:
    from reprotrain.result import CodeRecord

    return CodeRecord.of(tree).model_dump(mode="json")


def test_the_code_files_that_differ_are_named_as_causes() -> None:
    """Runs of code copies that differ in one file, and one file only in b: each is a likely cause
    by its digest (None: not there); equal code, or a run without a code record, names none."""
    a = result(code=_code(**{"train.py": "h1", "data.txt": "h2"}))
    b = raw(job_id="b", code=_code(**{"train.py": "h9", "data.txt": "h2", "spec_lr.yaml": "h3"}))
    b["trace"][1]["metrics"]["loss"] = 0.75
    v = compare(a, Result.model_validate(b))
    assert v.verdict == "diverged"
    code = [(c.key, c.a, c.b) for c in v.causes if c.label == "code"]
    assert code == [("code/spec_lr.yaml", None, "h3"), ("code/train.py", "h1", "h9")]
    assert all(c.likely_cause for c in v.causes if c.label == "code")
    same = result(job_id="b", code=_code(**{"train.py": "h1", "data.txt": "h2"}))
    assert [c for c in compare(a, same).causes if c.key.startswith("code")] == []
    assert [c for c in compare(a, result(job_id="b")).causes if c.key.startswith("code")] == []


def test_code_of_too_many_files_is_one_cause() -> None:
    """Past CODE_TREE_MAX files the record keeps only the whole digest, and so does the cause."""
    from reprotrain.result import CODE_TREE_MAX

    many = {f"f{i}.py": "x" for i in range(CODE_TREE_MAX + 1)}
    a, b = result(code=_code(**many)), result(job_id="b", code=_code(**{**many, "f0.py": "y"}))
    assert a.code.tree is None and a.code.files == CODE_TREE_MAX + 1
    assert [c.key for c in compare(a, b).causes if c.key.startswith("code")] == ["code"]


def test_a_cause_is_printed_from_where_its_values_part() -> None:
    """The CLI's cause line shows a command from its first differing argument and params by the
    keys that differ, however long what they share; it prints the bisect hint only where the
    verdict offers a bisect (a code cause: none)."""
    from reprotrain.bisect import offer_bisect
    from reprotrain.cli.output import format_verdict

    head = ["python", "makemore.py", "-i", "names.txt", "-o", "out", "--max-steps", "501"]
    a = result(spec={"seed": 1, "params": {"lr": 0.1, "epochs": 2, "width": 64}, "command": head})
    b = raw(job_id="b", spec={"seed": 1, "params": {"lr": 0.2, "epochs": 2, "width": 64},
                              "command": [*head, "--learning-rate", "6e-4"]})  # fmt: skip
    b["trace"][1]["metrics"]["loss"] = 0.75
    v = compare(a, Result.model_validate(b)).model_dump(mode="json")
    text = format_verdict(v)
    assert 'command: spec.command […] → […, "--learning-rate", "6e-4"]' in text
    assert 'job parameters: spec.params {"lr": 0.1, …} → {"lr": 0.2, …}' in text
    offered = offer_bisect(compare(a, Result.model_validate(b)), a.spec).model_dump(mode="json")
    assert "bisect" not in offered and "reprotrain bisect" not in format_verdict(offered)  # would refuse
    b["spec"]["command"] = head  # the same code, other params: offered, and the hint printed
    offered = offer_bisect(compare(a, Result.model_validate(b)), a.spec).model_dump(mode="json")
    assert offered["bisect"] == "/v1/jobs/a/bisect/b"
    assert "reprotrain bisect a b" in format_verdict(offered)
    assert "reprotrain bisect" not in format_verdict(offered, bisect=False)


def test_data_order_digests_of_two_forms_are_not_compared() -> None:
    """A chain (a run that checkpointed, marked `chain:`) against a plain digest says nothing:
    not compared, with a note; a chain stored before chains were marked agrees with its marked
    value; two plain digests that differ are a data-order divergence."""

    def with_data(job_id: str, data: list[str]) -> Result:
        d = raw(job_id=job_id)
        for entry, value in zip(d["trace"], data, strict=True):
            entry["data"] = value
        return Result.model_validate(d)

    plain = with_data("a", ["p0", "p1", "p2", "p3"])
    chain = with_data("b", ["chain:c0", "chain:c1", "chain:c2", "chain:c3"])
    v = compare(plain, chain)
    assert v.verdict == "identical" and any("another form" in n for n in v.notes), v
    old = with_data("a", ["c0", "c1", "c2", "c3"])  # a chain stored unmarked, before the mark
    assert compare(old, chain).verdict == "identical" and not compare(old, chain).notes
    other = with_data("b", ["p0", "x1", "p2", "p3"])
    v = compare(plain, other)
    assert (v.verdict, v.divergence.step, v.divergence.differs) == ("diverged", 1, ["data_order"])
