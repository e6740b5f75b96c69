"""Re-runs in fresh job processes: identical when they should be, and diverged where they are not."""

from __future__ import annotations

from reprotrain.compare import compare
from reprotrain.outputs import RunFiles
from tests.helpers import base_spec


def test_same_spec_twice_is_identical(run_job) -> None:
    """The same spec in two fresh processes gives identical digests of everything."""
    a, a_dir = run_job(base_spec())
    b, b_dir = run_job(base_spec())
    assert a.status == b.status == "SUCCEEDED"
    assert a.digests["model"]["tensors"] and a.digests["optimizer"]["tensors"]
    v = compare(a, b, RunFiles.local(a_dir), RunFiles.local(b_dir))
    assert v.verdict == "identical", v


def test_digesting_at_other_steps_is_not_a_divergence(run_job) -> None:
    """The same job digesting its parameters every step and every second step: identical (the
    steps both digested agree), with a note, and the tracking difference listed but not as a
    likely cause. A step digested on one side only is not a difference."""
    a, a_dir = run_job(base_spec())
    b, b_dir = run_job(base_spec(track={"digest_every": 2}))
    assert [e.params is None for e in b.trace[:2]] == [False, True]
    v = compare(a, b, RunFiles.local(a_dir), RunFiles.local(b_dir))
    assert v.verdict == "identical", v
    assert any("digested their parameters at other steps" in n for n in v.notes), v.notes
    assert [(c.key, c.likely_cause) for c in v.causes if c.key.startswith("spec.")] == [("spec.track", False)]


def test_another_seed_diverges_at_the_first_step_naming_a_tensor(run_job) -> None:
    """A different seed diverges at the first logged step, with a tensor named and a cause."""
    a, a_dir = run_job(base_spec())
    b, b_dir = run_job(base_spec(seed=4321))
    v = compare(a, b, RunFiles.local(a_dir), RunFiles.local(b_dir))
    assert v.verdict == "diverged"
    assert v.divergence.step == a.trace[0].step == 0
    assert v.divergence.tensor in a.digests["model"]["tensors"]
    assert v.divergence.tensor_max_abs > 0
    assert "seed" in v.likely_causes


def test_urandom_noise_diverges_at_its_step_in_its_parameter(run_job) -> None:
    """OS entropy added to one weight at step 6 is found at step 6, in that weight."""
    spec = base_spec(
        entrypoint="reprotrain.examples.nondeterministic:train",
        params={"mode": "urandom", "noise_step": 6, "steps": 10},
    )
    a, a_dir = run_job(spec)
    b, b_dir = run_job(spec)
    v = compare(a, b, RunFiles.local(a_dir), RunFiles.local(b_dir))
    assert v.verdict == "diverged"
    assert v.divergence.step == 6
    assert v.divergence.tensor == "2.weight"
    assert v.likely_causes == []


def test_fork_runner_matches_a_fresh_interpreter(run_job) -> None:
    """A job forked from the torch-preloaded server and one in a new interpreter agree bit for bit."""
    from reprotrain.job.launcher import SpawnRunner

    forked, f_dir = run_job(base_spec())
    spawned, s_dir = run_job(base_spec(), runner=SpawnRunner())
    assert forked.digests["model"] == spawned.digests["model"]
    assert forked.digests["optimizer"] == spawned.digests["optimizer"]
    assert compare(forked, spawned, RunFiles.local(f_dir), RunFiles.local(s_dir)).verdict == "identical"


def test_dataloader_workers_reproduce_and_record_data_order(run_job) -> None:
    """A shuffling DataLoader with worker processes reproduces; each step carries its data digest."""
    spec = base_spec(
        entrypoint="reprotrain.examples.tiny_cnn:train",
        params={"epochs": 1, "samples": 96},
        track={"digest_every": 2},
    )
    a, a_dir = run_job(spec)
    b, b_dir = run_job(spec)
    assert all(e.data for e in a.trace)
    assert len({e.data for e in a.trace}) == len(a.trace)
    assert [bool(e.params) for e in a.trace] == [i % 2 == 0 for i in range(len(a.trace))]
    assert compare(a, b, RunFiles.local(a_dir), RunFiles.local(b_dir)).verdict == "identical"


def test_thread_count_is_a_named_cause(run_job) -> None:
    """Runs with 1 and 2 intra-op threads show the thread count as a likely cause."""
    a, _ = run_job(base_spec())
    b, _ = run_job(base_spec(determinism={"policy": "strict", "num_threads": 2}))
    assert a.determinism.effective.num_threads == 1
    assert b.determinism.effective.num_threads == 2
    causes = {c.key: c for c in compare(a, b).causes}
    assert causes["determinism.num_threads"].label == "thread count"
    assert causes["determinism.num_threads"].likely_cause is True
    assert a.env_digest != b.env_digest


def test_changed_input_byte_is_named_as_the_cause(run_job, tmp_path) -> None:
    """One byte changed in an input file: the verdict names that input and file."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.bin").write_bytes(bytes(range(256)) * 4)
    spec = base_spec(inputs={"train": {"path": str(data)}})
    a, _ = run_job(spec)
    with open(data / "train.bin", "r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    b, _ = run_job(spec)
    causes = [c for c in compare(a, b).causes if c.likely_cause]
    assert any(c.key == "inputs.train.file_digests.train.bin" for c in causes)
    assert {c.label for c in causes} == {"input data"}


def test_missing_input_fails_the_job_with_its_name(run_job, tmp_path) -> None:
    """An input path that does not exist fails the job before it starts, naming the input."""
    r, _ = run_job(base_spec(inputs={"train": {"path": str(tmp_path / "absent")}}))
    assert r.status == "FAILED"
    assert "inputs.train.path" in r.error.message


def test_trace_floats_round_trip_exactly(run_job) -> None:
    """Stored metric values equal the float32 loss widened to float64, bit for bit."""
    import json

    r, job_dir = run_job(base_spec())
    stored = json.loads((job_dir / "result.json").read_text())
    assert [e["metrics"]["loss"] for e in stored["trace"]] == [e.metrics["loss"] for e in r.trace]
    assert all(float(repr(e.metrics["loss"])) == e.metrics["loss"] for e in r.trace)
