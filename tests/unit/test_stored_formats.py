"""What the store holds reads back: results and verdicts of earlier versions, and every verdict we write."""

from __future__ import annotations

from typing import Any

from reprotrain.compare import compare
from reprotrain.result import Result
from reprotrain.verdict import Verdict
from tests.helpers import fingerprint_dict


def stored(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "job_id": "a",
        "name": "t",
        "spec": {"seed": 1},
        "spec_digest": "d",
        "status": "SUCCEEDED",
        "metrics": {"loss": 0.5},
        "trace": [{"kind": "metric", "step": 0, "metrics": {"loss": 0.5}}],
        "digests": {"stdout": "s"},
        "fingerprint": fingerprint_dict(),
    }
    base.update(kw)
    return base


def test_a_result_stored_before_typed_contracts_reads() -> None:
    """Empty fingerprint/determinism as {}, an error with a null op, no mkl_cbwr_branch: all read."""
    old_knobs = {k: v for k, v in fingerprint_dict()["determinism"].items() if k != "mkl_cbwr_branch"}
    ok = Result.model_validate(stored(fingerprint=fingerprint_dict(determinism=old_knobs)))
    failed = Result.model_validate(
        stored(
            status="FAILED",
            fingerprint={},
            determinism={},
            error={"type": "ValueError", "message": "boom", "nondeterministic_op": None},
        )
    )
    assert ok.fingerprint.determinism.mkl_cbwr_branch is None
    assert failed.fingerprint is None and failed.determinism is None
    assert failed.error.message == "boom"
    assert compare(ok, failed).verdict == "incomparable"


def test_fields_a_newer_version_adds_are_ignored_when_read() -> None:
    """A stored result with unknown fields at every level still reads (an older API beside newer workers)."""
    fp = fingerprint_dict(cpu={**fingerprint_dict()["cpu"], "microcode": "0x1"}, new_section={"x": 1})
    r = Result.model_validate(stored(fingerprint=fp, new_field=1))
    assert r.fingerprint.cpu.model == "Test CPU"


def test_every_verdict_reads_back_as_stored() -> None:
    """A metric on one side only (a None in the delta) survives the store: dump, read, same verdict."""
    a = Result.model_validate(stored())
    b = Result.model_validate(
        stored(job_id="b", trace=[{"step": 0, "metrics": {"loss": 0.5, "acc": 1.0}}], metrics={"acc": 1.0})
    )
    v = compare(a, b)
    assert v.verdict == "diverged" and v.divergence.metrics["acc"].a is None
    again = Verdict.model_validate(v.model_dump(mode="json"))
    assert again == v
    assert "tensor_step" not in v.model_dump(mode="json")["divergence"]  # unset: not said
