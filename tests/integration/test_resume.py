"""Exact resume on the job side: a run killed after a checkpoint and resumed from it is identical to
the same spec run straight through (real fork server, real forked job processes, DataLoader workers
and shuffling on)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from reprotrain.checkpoint import META, complete
from reprotrain.compare import compare
from reprotrain.outputs import RunFiles
from reprotrain.wire import JobFiles
from tests.helpers import base_spec

PARAMS = {"samples": 128, "epochs": 3, "workers": 2, "checkpoint_every": 3}  # 4 steps an epoch


def spec(**params: object) -> dict:
    return base_spec(name="resumable", entrypoint="reprotrain.examples.resumable_cnn:train",
                     params={**PARAMS, **params})  # fmt: skip


def logged(job_dir: Path) -> int:
    path = job_dir / JobFiles.EVENTS
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"kind":"metric"' in line)


def killed_at(run_job, tmp_path: Path, at: int, job: dict | None = None, **kw: object) -> Path:
    """Run the job and SIGKILL its process group once `at` steps are logged and a checkpoint is
    complete; the job directory it left."""
    from reprotrain.job.supervisor import execute  # noqa: F401 - the fixture runs it

    handles: list = []
    done = threading.Event()
    job_dirs: list[Path] = []

    def watch() -> None:
        while not done.is_set():
            if handles and job_dirs:
                d = job_dirs[0]
                if logged(d) >= at and complete(d / JobFiles.CHECKPOINTS):
                    os.killpg(handles[0].pid, signal.SIGKILL)
                    return
            time.sleep(0.005)

    def on_start(h) -> None:
        handles.append(h)
        job_dirs.extend(sorted(tmp_path.glob("job-*"), key=lambda p: p.stat().st_mtime)[-1:])

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    result, job_dir = run_job(job or spec(step_sleep=0.05), on_start=on_start, **kw)
    done.set()
    assert result.status == "FAILED", "the job was to be killed mid-run"
    return job_dir


@pytest.mark.parametrize("at", [2, 5, 9])
def test_a_run_killed_and_resumed_is_identical_to_a_straight_run(run_job, tmp_path: Path, at: int) -> None:
    """Killed after `at` logged steps (mid-epoch and at an epoch's end), resumed from its last
    complete checkpoint: trace, model, optimizer, outputs, stdout and stderr all equal a straight run."""
    straight, straight_dir = run_job(spec())
    assert straight.status == "SUCCEEDED", straight.error
    job_dir = killed_at(run_job, tmp_path, at)
    last = complete(job_dir / JobFiles.CHECKPOINTS)[-1]
    meta = json.loads((last / META).read_text())
    assert meta["logs"] % PARAMS["checkpoint_every"] == 0 and meta["logs"] <= logged(job_dir)
    resumed, resumed_dir = run_job(spec(), resume=last)
    assert resumed.status == "SUCCEEDED", resumed.error
    child = json.loads((resumed_dir / JobFiles.CHILD).read_text())
    assert child["resumed"]["logs"] == meta["logs"] and child["resumed"]["from_step"] == meta["step"]
    v = compare(straight, resumed, RunFiles.local(straight_dir), RunFiles.local(resumed_dir))
    assert v.verdict == "identical", v.model_dump(exclude_none=True)
    assert len(resumed.trace) == len(straight.trace) == 12


def test_a_checkpoint_cut_short_is_not_used(run_job, tmp_path: Path) -> None:
    """A checkpoint whose writing was cut short (no final name) is not a complete one: the one
    before it is what a resume uses."""
    job_dir = killed_at(run_job, tmp_path, 7)
    root = job_dir / JobFiles.CHECKPOINTS
    before = complete(root)
    partial = root / ".partial-000099"
    partial.mkdir()
    (partial / "state.pt").write_bytes(b"half a checkpoint")
    assert complete(root) == before


def test_without_checkpoints_the_digests_are_unchanged(run_job) -> None:
    """A job that never turns checkpoints on records the data-order digest as before; with them
    on, a straight run reproduces itself."""
    plain, plain_dir = run_job(spec(checkpoint_every=0))
    again, again_dir = run_job(spec(checkpoint_every=0))
    assert compare(plain, again, RunFiles.local(plain_dir), RunFiles.local(again_dir)).verdict == "identical"
    on, on_dir = run_job(spec())
    assert [e.metrics for e in on.trace] == [e.metrics for e in plain.trace]
    assert on.trace[-1].data != plain.trace[-1].data  # a hash chain (what a checkpoint can hold)
    assert on.trace[-1].data.startswith("chain:")  # marked as one, so no verdict compares the two forms
    assert not (plain_dir / JobFiles.CHECKPOINTS).exists() and complete(on_dir / JobFiles.CHECKPOINTS)
    # the same run with checkpoints on and off: identical, not "diverged at step 1 (data order)"
    v = compare(plain, on, RunFiles.local(plain_dir), RunFiles.local(on_dir))
    assert v.verdict == "identical", v
    assert any("data order is kept in another form" in n for n in v.notes), v.notes


SCRIPT = """
import os, sys, time
import numpy as np, torch
from reprotrain import checkpoint, report

print("starting")  # before the resume point: in the first attempt's stdout, and only there
w, first = torch.zeros(8), 0
if (saved := checkpoint.resume()) is not None:
    s = torch.load(saved / "state.pt", weights_only=False)
    w, first = s["w"], s["step"] + 1
    torch.set_rng_state(s["torch"]); np.random.set_state(s["numpy"])
for step in range(first, 12):
    w = w + torch.randn(8) * float(np.random.rand())
    report.log(step, norm=float(w.norm()))
    print("step", step)
    if step % 3 == 2:
        state = {"w": w, "step": step, "torch": torch.get_rng_state(), "numpy": np.random.get_state()}
        checkpoint.checkpoint(lambda d: torch.save(state, d / "state.pt"))
    time.sleep(float(os.environ.get("STEP_SLEEP", "0")))
os.makedirs("outputs", exist_ok=True)
open("outputs/w.txt", "w").write(repr(w.tolist()))
"""


def test_a_script_that_honours_the_contract_resumes_exactly(run_job, tmp_path: Path) -> None:
    """Script mode: checkpoint.checkpoint saves the script's state with the logs and working
    directory, checkpoint.resume puts them back; killed and resumed, it equals a straight run."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(SCRIPT)
    job = base_spec(name="script-resume", command=["python", "train.py"], entrypoint=None)
    straight, straight_dir = run_job(job, code_dir=code)
    assert straight.status == "SUCCEEDED", straight.error
    job_dir = killed_at(run_job, tmp_path, 7, {**job, "env": {"STEP_SLEEP": "0.05"}}, code_dir=code)
    last = complete(job_dir / JobFiles.CHECKPOINTS)[-1]
    assert json.loads((last / META).read_text())["logs"] in (3, 6, 9)
    resumed, resumed_dir = run_job(job, code_dir=code, resume=last)
    assert resumed.status == "SUCCEEDED", resumed.error
    assert json.loads((resumed_dir / JobFiles.CHILD).read_text())["resumed"]["checkpoint"] >= 1
    v = compare(straight, resumed, RunFiles.local(straight_dir), RunFiles.local(resumed_dir))
    assert v.verdict == "identical", v.model_dump(exclude_none=True)
    assert (resumed_dir / JobFiles.STDOUT).read_text().count("starting") == 1


def test_reprotrain_run_resume_goes_on_from_an_interrupted_run(run_job, tmp_path: Path) -> None:
    """`reprotrain run --resume RUN` takes the run's last complete checkpoint; a directory with
    none is a clear error."""
    import subprocess
    import sys

    from reprotrain.result import load_result
    from tests.helpers import ROOT

    job_dir = killed_at(run_job, tmp_path, 6)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec(step_sleep=0.05)))  # the spec the killed run ran
    cli = [sys.executable, "-m", "reprotrain.cli", "run", str(spec_file)]
    out = subprocess.run([*cli, "--out", str(tmp_path / "r"), "--resume", str(job_dir)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    resumed, resumed_dir = load_result(tmp_path / "r")
    last = json.loads((complete(job_dir / JobFiles.CHECKPOINTS)[-1] / META).read_text())
    assert json.loads((resumed_dir / JobFiles.CHILD).read_text())["resumed"]["logs"] == last["logs"]
    # the result says it went on from that checkpoint, and so does what `run` printed
    (r,) = resumed.resumes
    assert (r.restored, r.checkpoint, r.logs, r.from_step) == (True, last["seq"], last["logs"], last["step"])
    assert f"resumed   attempt 2 on local: went on after step {last['step']}" in out.stdout
    straight, straight_dir = run_job(spec())
    v = compare(straight, resumed, RunFiles.local(straight_dir), RunFiles.local(resumed_dir))
    assert v.verdict == "identical", v.model_dump(exclude_none=True)
    bad = subprocess.run([*cli, "--resume", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, check=False)  # fmt: skip
    assert bad.returncode != 0 and "holds no complete checkpoint" in bad.stderr
    # another seed than the checkpointed run's: refused, naming what differs, nothing run
    other = subprocess.run([*cli, "--out", str(tmp_path / "o"), "--resume", str(job_dir), "--seed", "5"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert other.returncode != 0 and "another spec (seed differ)" in other.stderr, other.stderr
    assert not (tmp_path / "o").exists()
