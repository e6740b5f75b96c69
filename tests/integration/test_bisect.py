"""Bisect and pre-flight in real job processes: two forked copies recorded op by op.

The nondeterminism is a real kernel: `reprotrain_examples::noisy_add`, a custom op registered
through torch.library whose CPU kernel adds OS entropy to its output at one step, inside
`encoder.1.mix` (examples/noisy_op.py).
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers import base_spec

NOISY = {"entrypoint": "reprotrain.examples.noisy_op:train", "params": {"steps": 10, "noise_step": 5}}


def test_bisect_names_the_op_its_module_its_step_and_the_ops_before(run_job) -> None:
    r, job_dir = run_job(base_spec(**NOISY, bisect={"until_step": 7}))
    assert r.status == "SUCCEEDED", r.error
    b = r.bisect
    assert b.found == "op", b.summary
    assert b.step == 5
    f = b.first
    assert (f.op, f.module, f.phase) == ("reprotrain_examples::noisy_add", "encoder.1.mix", "forward")
    assert f.source == "reprotrain/examples/noisy_op.py:37" or f.source.endswith("noisy_op.py:37")
    assert f.inputs == ["float32[64, 16]", "float32[64, 16]"] and f.outputs == ["float32[64, 16]"]
    (out,) = b.outputs
    assert out.differing == 1 and out.total == 64 * 16
    assert 0 < out.max_abs < 1e-2 and out.max_rel > 0
    # the ops before it agreed, in order, ending with the same block's forward
    assert len(b.before) == 8 and all(o.seq < f.seq for o in b.before)
    assert [o.seq for o in b.before] == sorted(o.seq for o in b.before)
    assert (b.before[-1].op, b.before[-1].module) == ("aten::tanh", "encoder.1")
    assert b.before[-2].module == "encoder.1.lin" and b.before[-3].module == "encoder.0.mix"
    assert b.ops_compared > 300 and b.steps_compared == 5
    # the job itself did not train: the copies ran alone, each in its own output directory
    assert r.trace == []
    assert (job_dir / "recorded" / "a.stdout").exists() and (job_dir / "recorded" / "b" / "outputs").is_dir()


def test_bisect_of_a_deterministic_op_finds_nothing_and_says_so(run_job) -> None:
    quiet = {**NOISY, "params": {**NOISY["params"], "noisy": False}}
    r, _ = run_job(base_spec(**quiet, bisect={"until_step": 7}))
    assert r.status == "SUCCEEDED", r.error
    assert r.bisect.found == "none" and r.bisect.first is None
    assert r.bisect.steps_compared == 8  # steps 0..7: it stopped at the bound
    assert r.bisect.summary.startswith("no difference: the two copies agreed on all")


def test_bisect_against_another_spec_finds_the_first_op_it_changes(run_job) -> None:
    from reprotrain.spec import parse_spec

    quiet = {**NOISY, "params": {**NOISY["params"], "noisy": False}}
    other = base_spec(**quiet)
    other["seed"] = 99  # another seed: the first random op (the data) differs
    against = parse_spec(other).canonical()
    r, _ = run_job(base_spec(**quiet, bisect={"until_step": 3, "against": against}))
    assert r.bisect.found == "op" and r.bisect.step == 0, r.bisect.summary
    assert r.bisect.first.op == "aten::randn" and r.bisect.first.source.endswith("noisy_op.py:65")
    assert r.bisect.ops_compared == 0 and r.bisect.before == []


def test_preflight_fails_a_nondeterministic_job_before_its_run(run_job) -> None:
    spec = base_spec(**NOISY)
    spec["determinism"] = {"policy": "strict", "preflight": 6}
    r, _ = run_job(spec)
    assert r.status == "FAILED"
    assert r.error.type == "nondeterministic"
    assert "reprotrain_examples::noisy_add" in r.error.message and "step 5" in r.error.message
    assert r.bisect.found == "op" and r.bisect.step == 5 and r.bisect.first.module == "encoder.1.mix"
    assert r.trace == [] and r.preflight is None  # the long run never started


def test_preflight_that_passes_is_recorded_and_the_job_runs(run_job) -> None:
    spec = base_spec(**NOISY)
    spec["determinism"] = {"policy": "strict", "preflight": 3}
    r, _ = run_job(spec)
    assert r.status == "SUCCEEDED", r.error
    assert r.preflight.steps == 3 and r.preflight.ops > 100 and r.preflight.seconds > 0
    assert [e.step for e in r.trace] == list(range(10)) and r.bisect is None


def test_preflight_with_dataloader_workers_does_not_cry_wolf(run_job) -> None:
    """Worker processes deliver batches in whatever order they finish; the loader yields them in
    order. The copies record batches as yielded, so arrival order never reads as a difference."""
    spec = base_spec(entrypoint="reprotrain.examples.tiny_cnn:train", params={"epochs": 1, "workers": 2})
    spec["determinism"] = {"policy": "strict", "preflight": 4}
    for _ in range(3):
        r, _ = run_job(spec)
        assert r.status == "SUCCEEDED", (r.error, r.bisect and r.bisect.summary)
        assert r.preflight.steps == 4


SCRIPT = """
import os, sys, torch
from reprotrain import report
torch.manual_seed(0)
w = torch.zeros(4)
for step in range(6):
    w = w * 0.5 + torch.rand(4)
    if step == int(sys.argv[1]):
        w = w + int.from_bytes(os.urandom(2), "little") * 1e-9
    report.log(step, w=float(w.sum()))
"""


def test_preflight_in_script_mode_records_a_script_that_reports_steps(run_job, tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(SCRIPT)
    spec = {"command": ["python", "train.py", "2"], "seed": 1, "determinism": {"preflight": 4}}
    r, _ = run_job(spec, code_dir=code)
    assert r.status == "FAILED" and r.error.type == "nondeterministic"
    assert r.bisect.found == "op" and r.bisect.step == 2 and r.bisect.first.op == "aten::add"
    assert r.bisect.first.source == "train.py:9"
    spec["command"] = ["python", "train.py", "5"]  # the noise comes after the checked steps
    r, _ = run_job(spec, code_dir=code)
    assert r.status == "SUCCEEDED", r.error
    assert r.preflight.steps == 4 and len(r.trace) == 6


def test_a_script_that_logs_no_steps_is_bisected_whole(run_job, tmp_path: Path) -> None:
    """An unchanged script (no reprotrain.report calls): the bisect records it to its end."""
    code = tmp_path / "code"
    code.mkdir()
    text = "\n".join(line for line in SCRIPT.splitlines() if "report" not in line)
    (code / "train.py").write_text(text + "\ntorch.save(w, 'w.pt')\n")
    r, _ = run_job(
        {"command": ["python", "train.py", "3"], "seed": 1, "bisect": {"until_step": None}}, code_dir=code
    )
    assert r.status == "SUCCEEDED", r.error
    assert (
        r.bisect.found == "op" and r.bisect.first.op == "aten::add" and r.bisect.first.source == "train.py:8"
    )
    assert r.bisect.ops_compared > 6 and r.bisect.steps_compared == 0


def test_sides_recorded_in_two_environments_part_at_the_first_kernel_that_differs(
    run_job, monkeypatch
) -> None:
    """A bisect across environments, on the job side: each side recorded alone by a fork server of
    its own environment, then the recordings compared. The environments differ in a real way:
    ATen's CPU kernel set (AVX2 here; DEFAULT, the scalar kernels, on side b), which machines with
    different instruction sets pick on their own."""
    from reprotrain.fingerprint import diff
    from reprotrain.job.launcher import ForkRunner
    from reprotrain.job.oprecord import compare_streams

    spec = base_spec(entrypoint="reprotrain.examples.mlp:train", params={"steps": 4})
    spec["track"] = {"digest_every": 1}
    r_a, dir_a = run_job({**spec, "bisect": {"until_step": 2, "side": "a"}})
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    with ForkRunner() as other:
        r_b, dir_b = run_job({**spec, "bisect": {"until_step": 2, "side": "b", "partner": "x"}}, runner=other)
    for r in (r_a, r_b):
        assert r.status == "SUCCEEDED", r.error
        assert r.trace == [] and r.bisect is None  # a side records; it neither trains nor compares
    causes = {d["key"]: (d["a"], d["b"]) for d in diff(r_a.fingerprint, r_b.fingerprint)}
    assert causes["cpu.capability"][1] == "DEFAULT" and causes["cpu.capability"][0] != "DEFAULT"

    report = compare_streams(dir_a / "recorded" / "a.stream", dir_b / "recorded" / "b.stream")
    assert report.found == "op", report.summary
    f = report.first
    assert f.op.startswith("aten::") and f.source and f.source.endswith(".py:" + f.source.rsplit(":", 1)[1])
    (out, *_) = [o for o in report.outputs if o.differing]
    assert 0 < out.differing <= out.total and 0 < out.max_abs < 1e-3
    # here it is the very first op: the data, drawn by ATen's vectorised normal sampler
    assert report.step == 0 and (f.op, f.seq, report.before) == ("aten::randn", 0, []), report.summary
    # the same environment on both sides: every op agrees up to the bound
    same = compare_streams(dir_a / "recorded" / "a.stream", dir_a / "recorded" / "a.stream")
    assert same.found == "none" and same.steps_compared == 3
