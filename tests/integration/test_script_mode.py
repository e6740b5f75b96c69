"""Script mode: unchanged scripts run under the policy, in every Python process of the job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reprotrain.compare import compare
from reprotrain.outputs import RunFiles
from tests.helpers import ROOT

SCRIPT_DIR = ROOT / "examples" / "script"


def script_spec(command: list[str], policy: str = "seeded") -> dict:
    spec = {"name": "script", "command": command, "determinism": {"policy": policy}, "device": "cpu"}
    if policy != "off":
        spec["seed"] = 42
    return spec


def test_unseeded_script_reproduces_under_seeded_and_not_under_off(run_job) -> None:
    """The same unchanged script: identical under seeded, different under off."""
    spec = script_spec(["python", "train.py"])
    a, a_dir = run_job(spec, code_dir=SCRIPT_DIR)
    b, b_dir = run_job(spec, code_dir=SCRIPT_DIR)
    assert a.status == "SUCCEEDED", a.error
    assert set(a.digests["files"]["files"]) == {"weights.json", "w.pt"}
    assert compare(a, b, RunFiles.local(a_dir), RunFiles.local(b_dir)).verdict == "identical"

    off = script_spec(["python", "train.py"], policy="off")
    c, c_dir = run_job(off, code_dir=SCRIPT_DIR)
    d, d_dir = run_job(off, code_dir=SCRIPT_DIR)
    v = compare(c, d, RunFiles.local(c_dir), RunFiles.local(d_dir))
    assert v.verdict == "diverged"
    assert v.files["weights.json"] == "differs"
    assert c.digests["stdout"] != d.digests["stdout"]


def test_every_python_process_of_a_shell_command_is_seeded(run_job) -> None:
    """`sh -c 'python a && python b'`: both processes seeded, the whole job reproduces."""
    spec = script_spec(["sh", "-c", "python prepare.py && python train.py --epochs 1"])
    a, a_dir = run_job(spec, code_dir=SCRIPT_DIR)
    b, b_dir = run_job(spec, code_dir=SCRIPT_DIR)
    assert a.status == "SUCCEEDED", a.error
    assert compare(a, b, RunFiles.local(a_dir), RunFiles.local(b_dir)).verdict == "identical"
    out = json.loads((a_dir / "work" / "weights.json").read_text())
    assert out["argv"] == ["--epochs", "1"]
    assert (a_dir / "work" / "prepared.txt").read_text() == (b_dir / "work" / "prepared.txt").read_text()
    assert "prepared" in (a_dir / "stdout.log").read_text()


def test_subprocess_gets_the_torch_knobs(run_job, tmp_path: Path) -> None:
    """A Python process started by a shell reports strict's torch settings once it imports torch."""
    (tmp_path / "probe.py").write_text(
        "import json, torch\n"
        "json.dump({'det': torch.are_deterministic_algorithms_enabled(),"
        " 'threads': torch.get_num_threads(), 'seed': torch.initial_seed()}, open('probe.json', 'w'))\n"
    )
    spec = script_spec(["sh", "-c", "python probe.py"], policy="strict")
    r, job_dir = run_job(spec, code_dir=tmp_path)
    assert r.status == "SUCCEEDED", r.error
    assert json.loads((job_dir / "work" / "probe.json").read_text()) == {
        "det": True,
        "threads": 1,
        "seed": 42,
    }


def test_script_metrics_through_the_one_line_api(run_job, tmp_path: Path) -> None:
    """A script that calls reprotrain.report.log gets a trace and final metrics."""
    (tmp_path / "m.py").write_text(
        "from reprotrain.report import log\nfor s in range(3):\n    log(s, loss=1.0 / (s + 1))\n"
    )
    r, _ = run_job(script_spec(["python", "m.py"]), code_dir=tmp_path)
    assert [e.step for e in r.trace] == [0, 1, 2]
    assert r.metrics == {"loss": 1.0 / 3}


def test_failing_script_and_missing_command_fail_clearly(run_job, tmp_path: Path) -> None:
    """A non-zero exit and an unknown program both end FAILED with a one-line reason."""
    (tmp_path / "bad.py").write_text("import sys\nsys.exit(3)\n")
    r, _ = run_job(script_spec(["python", "bad.py"]), code_dir=tmp_path)
    assert r.status == "FAILED" and r.error.message == "script exited with status 3"
    r, _ = run_job(script_spec(["no-such-program-xyz"]), code_dir=tmp_path)
    assert r.status == "FAILED" and "command not found: no-such-program-xyz" in r.error.message


def test_python_dash_m_runs_a_module_in_the_workspace(run_job, tmp_path: Path) -> None:
    """`python -m pkg.tool arg` runs the module as __main__ with its argv, seeded."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "tool.py").write_text(
        "import random, sys\nif __name__ == '__main__':\n"
        "    open('out.txt', 'w').write(f'{sys.argv[1:]} {random.random()}')\n"
    )
    a, a_dir = run_job(script_spec(["python", "-m", "pkg.tool", "x"]), code_dir=tmp_path)
    b, _ = run_job(script_spec(["python", "-m", "pkg.tool", "x"]), code_dir=tmp_path)
    assert a.status == "SUCCEEDED", a.error
    assert (a_dir / "work" / "out.txt").read_text().startswith("['x'] 0.")
    assert a.digests["files"] == b.digests["files"]


def test_a_failing_script_says_what_it_raised(run_job, tmp_path: Path) -> None:
    """`sh -c 'python t.py'` dying in torch.load's weights-only check: the error is UnpicklingError,
    with torch's weights_only explanation, how the command ended, and stderr's last lines."""
    (tmp_path / "t.py").write_text(
        "import argparse, torch\n"
        "torch.save({'args': argparse.Namespace(lr=0.1)}, 'ckpt.pt')\n"
        "print('loading', flush=True)\n"
        "torch.load('ckpt.pt')\n"
    )
    r, _ = run_job(script_spec(["sh", "-c", "python t.py"]), code_dir=tmp_path)
    assert r.status == "FAILED"
    assert r.error.type == "UnpicklingError"
    assert "weights_only" in r.error.message
    assert r.error.detail == "command exited with status 1"
    assert r.error.traceback.startswith("Traceback (most recent call last):")
    assert "UnpicklingError" in r.error.stderr_tail


def test_every_run_works_in_the_same_directory(run_job, tmp_path: Path) -> None:
    """Two runs of a script that records its working directory write the same bytes (one canonical
    path), and the file lands in each run's own directory afterwards."""
    (tmp_path / "cwd.py").write_text("import os\nopen('cwd.txt', 'w').write(os.getcwd())\n")
    (a, a_dir), (b, b_dir) = (run_job(script_spec(["python", "cwd.py"]), code_dir=tmp_path) for _ in range(2))
    assert a.digests["files"]["files"]["cwd.txt"] == b.digests["files"]["files"]["cwd.txt"]
    recorded = (a_dir / "work" / "cwd.txt").read_text()
    assert recorded == (b_dir / "work" / "cwd.txt").read_text() and not recorded.startswith(str(a_dir))


def test_a_script_in_a_subdirectory_imports_the_projects_package(run_job, tmp_path: Path) -> None:
    """`python projects/x/run.py` imports `pkg` from the code's root, as `python` with the code on
    PYTHONPATH would (minGPT's projects/adder does this): the inline run gets the same sys.path."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("VALUE = 7\n")
    (tmp_path / "projects" / "x").mkdir(parents=True)
    (tmp_path / "projects" / "x" / "run.py").write_text(
        "import sys, pkg\nopen('out.txt', 'w').write(f'{pkg.VALUE} {sys.path[0].endswith(\"projects/x\")}')\n"
    )
    r, job_dir = run_job(script_spec(["python", "projects/x/run.py"]), code_dir=tmp_path)
    assert r.status == "SUCCEEDED", r.error
    assert (job_dir / "work" / "out.txt").read_text() == "7 True"


def test_a_changed_script_is_named_as_the_cause_and_not_offered_a_bisect(run_job, tmp_path: Path) -> None:
    """Two copies of the script directory, the second with a changed step size: each run records
    the code it ran from, file by file; the verdict names train.py as the likely cause (there is
    no spec or environment difference to name), and neither the verdict nor `bisect_specs` offers
    a bisect, which would run a's code twice and find nothing."""
    import shutil

    from reprotrain.bisect import Run, bisect_offered, bisect_specs
    from reprotrain.errors import Conflict
    from reprotrain.hashing import digest_file

    a_code, b_code = tmp_path / "a", tmp_path / "b"
    shutil.copytree(SCRIPT_DIR, a_code)
    shutil.copytree(SCRIPT_DIR, b_code)
    script = b_code / "train.py"
    script.write_text(script.read_text().replace("w - 0.1 *", "w - 0.2 *"))
    spec = script_spec(["python", "train.py"])
    (a, a_dir), (b, b_dir) = run_job(spec, code_dir=a_code), run_job(spec, code_dir=b_code)
    assert a.code is not None and a.code.tree["train.py"] == digest_file(a_code / "train.py")
    assert set(a.code.tree) == {"prepare.py", "spec.yaml", "train.py"} and a.code.files == 3
    v = compare(a, b, RunFiles.local(a_dir), RunFiles.local(b_dir))
    assert v.verdict == "diverged"
    assert [(c.key, c.likely_cause) for c in v.causes if c.label == "code"] == [("code/train.py", True)]
    assert not bisect_offered(v, a.spec)
    runs = [Run.of(r.job_id, r.spec, r.spec_digest, None, len(r.trace), code=r.code.digest) for r in (a, b)]
    with pytest.raises(Conflict, match="the files the runs ran from differ"):
        bisect_specs(runs[0], runs[1], v)


def test_a_script_that_seeds_torch_behind_a_shell_is_noted(run_job, tmp_path: Path) -> None:
    """`sh -c "python seeds.py"`: the script seeds torch from its own flag, and starts a
    multiprocessing child that seeds torch too (as a DataLoader worker does). The Python process
    the shell started reports the seed it ended with; the child does not; the verdict notes the
    script's seed on each side (the job process itself keeps the spec's)."""
    (tmp_path / "seeds.py").write_text(
        "import multiprocessing, sys, torch\n"
        "def child():\n"
        "    torch.manual_seed(999)\n"
        "if __name__ == '__main__':\n"
        "    torch.manual_seed(int(sys.argv[1]))\n"
        "    p = multiprocessing.get_context('spawn').Process(target=child)\n"
        "    p.start(); p.join()\n"
        "    torch.save(torch.randn(3), 'x.pt')\n"
    )
    (a, a_dir), (b, b_dir) = (
        run_job(script_spec(["sh", "-c", f"python seeds.py {s}"]), code_dir=tmp_path) for s in (1234, 5678)
    )
    assert a.status == "SUCCEEDED", a.error
    assert a.determinism.effective.torch_initial_seed == 42
    assert (a.determinism.process_seeds, b.determinism.process_seeds) == ([1234], [5678])
    v = compare(a, b, RunFiles.local(a_dir), RunFiles.local(b_dir))
    assert v.notes[:2] == [
        "a: the job seeds torch itself (torch seed 1234; spec seed 42)",
        "b: the job seeds torch itself (torch seed 5678; spec seed 42)",
    ]
