"""The reprotrain command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reprotrain.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        (
            "entrypoint: reprotrain.examples.mlp:train\nseed: 1\nlearning_rate: 3\n",
            "learning_rate: unknown field",
        ),
        (
            "entrypoint: reprotrain.examples.mlp:train\nseed: -5\n",
            "seed: Input should be greater than or equal to 0",
        ),
        ("name: x\nseed: 1\n", "entrypoint: give exactly one of 'entrypoint' or 'command' (neither"),
        ("entrypoint: a:b\ncommand: [python, t.py]\nseed: 1\n", "(both are set)"),
        ("entrypoint: [unclosed\n", "is not valid YAML/JSON"),
    ],
)
def test_bad_spec_is_one_line_and_nonzero(tmp_path: Path, body: str, expect: str) -> None:
    """Each bad spec file exits 2 with one line naming the problem, and no traceback."""
    (tmp_path / "bad.yaml").write_text(body)
    p = cli("run", str(tmp_path / "bad.yaml"))
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and expect in p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""


def test_run_twice_and_compare(tmp_path: Path) -> None:
    """run → run → compare prints identical; another seed prints diverged and exits 1; each run says
    how it was confined."""
    spec = ROOT / "examples" / "specs" / "noise.yaml"
    for name, extra in (("a", []), ("b", ["--seed", "7"]), ("c", ["--seed", "8"])):
        p = cli("run", str(spec), "--out", str(tmp_path / name), *extra)
        assert p.returncode == 0, p.stderr
        assert "SUCCEEDED" in p.stdout
        iso = json.loads((tmp_path / name / "result.json").read_text())["isolation"]
        shown = "isolation NONE" if iso["mode"] == "none" else f"isolation {iso['mode']}, network none"
        assert shown in p.stdout  # how the run was confined, said plainly
    same = cli("compare", str(tmp_path / "a"), str(tmp_path / "c"), "--json")
    verdict = json.loads(same.stdout)
    assert same.returncode == 1 and verdict["verdict"] == "diverged"
    assert "seed" in verdict["likely_causes"]
    human = cli("compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert human.stdout.startswith("verdict   diverged at step 5, first differing tensor 2.weight")


def test_compare_of_a_missing_result_is_an_error(tmp_path: Path) -> None:
    """Comparing something that is not a result exits 2 with one line."""
    (tmp_path / "x.json").write_text('{"hello": 1}')
    p = cli("compare", str(tmp_path / "x.json"), str(tmp_path / "x.json"))
    assert p.returncode == 2 and "is not a reprotrain result" in p.stderr
    p = cli("compare", str(tmp_path / "x.json"), str(tmp_path / "nope"))
    assert p.returncode == 2 and "nope' is neither a run directory here nor a job id" in p.stderr
    assert p.stderr.count("\n") == 1


def test_help_lists_commands() -> None:
    """--help names each command and shows an example."""
    p = cli("--help")
    assert p.returncode == 0
    assert "run" in p.stdout and "compare" in p.stdout and "examples:" in p.stdout


def test_a_reproduced_script_exits_0_and_says_what_differs(tmp_path: Path) -> None:
    """A script whose results reproduce but whose timing lines differ: compare prints
    results_identical with the incidental line, and exits 0; cut short by `head`, it stays quiet."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "t.py").write_text(
        "import time\nprint(f'step 0 took {time.perf_counter_ns() % 9973}ms')\n"
        "open('out.txt', 'w').write('42')\n"
    )
    (code / "spec.yaml").write_text("command: [python, t.py]\nseed: 1\ndevice: cpu\n")
    for name in "ab":
        assert cli("run", str(code / "spec.yaml"), "--out", str(tmp_path / name)).returncode == 0
    p = cli("compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("verdict   results_identical")
    assert "identical files: out.txt" in p.stdout and "stdout: timing noise only" in p.stdout
    piped = subprocess.run(
        f"{sys.executable} -m reprotrain.cli compare {tmp_path / 'a'} {tmp_path / 'b'} | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert piped.stdout == "verdict   " and "Traceback" not in piped.stderr


def test_the_demo_reproduces_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """`make demo`'s script: identical, exit 0, and its service's data directory is gone after."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPROTRAIN_")} | {"TMPDIR": str(tmp_path)}
    p = subprocess.run(
        [sys.executable, "-m", "reprotrain.examples.demo", str(ROOT / "examples/specs/mlp.yaml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "== verdict: identical" in p.stdout
    assert not list(tmp_path.glob("reprotrain-demo-*")), list(tmp_path.iterdir())
