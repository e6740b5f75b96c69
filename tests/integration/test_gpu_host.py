"""tests/gpu/run-on-gpu-host.sh without a GPU: its options; a wheelhouse made for this Python and
checked; one missing a wheel, or checked for another Python, named incomplete; and the offline
install into a fresh interpreter that has torch alone, ending in a report.

Making the wheelhouse downloads about 24 MB from the package index (numpy is two thirds of it):
without that network these tests fail, as in CI they must not.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.helpers import ROOT

SCRIPT = ROOT / "tests/gpu/run-on-gpu-host.sh"
PYVER = f"{sys.version_info.major}.{sys.version_info.minor}"
OTHER = "3.13" if PYVER != "3.13" else "3.12"  # a Python the wheelhouse's compiled wheels do not fit


def sh(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_options() -> None:
    assert sh("--help").returncode == 0 and "--make-wheelhouse" in sh("--help").stdout
    for args, says in [
        (["--bogus"], "unknown argument: --bogus"),
        (["--check", "--python-version", "3"], "--python-version wants X.Y"),
        (["--budget", "soon"], "--budget wants whole seconds"),
        (["--wheelhouse"], "--wheelhouse needs a value"),
    ]:
        r = sh(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert says in r.stderr


def test_check_without_a_wheelhouse(tmp_path: Path) -> None:
    r = sh("--check", "--wheelhouse", str(tmp_path / "none"))
    assert r.returncode == 1
    assert "no wheels in" in r.stderr and "--make-wheelhouse" in r.stderr


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("wheelhouse")
    r = sh("--make-wheelhouse", "--python-version", PYVER, "--wheelhouse", str(d), timeout=280)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"wheelhouse complete for Python {PYVER}" in r.stderr
    return d


def test_the_wheelhouse_is_small_and_holds_the_lock_s_versions(wheelhouse: Path) -> None:
    """Everything beyond torch at requirements.lock's version (setuptools at the build file's),
    nothing of torch's own, and small enough to carry with the tree."""
    lock = {}
    for f in (ROOT / "requirements.lock", ROOT / "tests/gpu/requirements-build.txt"):
        for line in f.read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                name, version = line.split("#")[0].strip().split("==")
                lock[norm(name)] = version
    got = {norm(w.name.split("-")[0]): w.name.split("-")[1] for w in wheelhouse.glob("*.whl")}
    assert {"numpy", "pydantic", "pyyaml", "blake3", "xxhash", "pytest", "httpx", "setuptools"} <= set(got)
    assert not {"torch", "sympy", "networkx", "jinja2", "fsspec", "filelock", "fastapi", "celery"} & set(got)
    assert {n: v for n, v in got.items() if lock.get(n) != v} == {}
    size = sum(w.stat().st_size for w in wheelhouse.glob("*.whl"))
    assert size < 40e6, f"{size / 1e6:.0f} MB"


def test_check_names_what_is_missing(wheelhouse: Path, tmp_path: Path) -> None:
    """A wheel taken out, or another Python's version asked for: incomplete, naming the packages
    (the whole wheelhouse passed its check as it was made)."""
    broken = tmp_path / "wh"
    shutil.copytree(wheelhouse, broken)
    for w in broken.glob("xxhash-*.whl"):
        w.unlink()
    r = sh("--check", "--python-version", PYVER, "--wheelhouse", str(broken))
    assert r.returncode == 1
    assert re.search(r"missing: xxhash>=\S+ \(pinned: ==", r.stderr), r.stderr
    assert "missing: numpy" not in r.stderr
    r = sh("--check", "--python-version", OTHER, "--wheelhouse", str(wheelhouse))
    assert r.returncode == 1
    assert f"for Python {OTHER}" in r.stderr and "missing: numpy" in r.stderr, r.stderr
    r = sh("--check", "--wheelhouse", str(wheelhouse))  # for the Python it was made for
    assert r.returncode == 0 and f"wheelhouse complete for Python {PYVER}" in r.stderr, r.stderr


def _torch_closure() -> list[md.Distribution]:
    """torch and what it needs here (markers evaluated), as this interpreter has them installed."""
    found: dict[str, md.Distribution] = {}
    todo = ["torch"]
    while todo:
        d = md.distribution(todo.pop())
        if norm(d.metadata["Name"]) in found:
            continue
        found[norm(d.metadata["Name"])] = d
        for r in map(Requirement, d.requires or []):
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return list(found.values())


def host_python(root: Path) -> Path:
    """A fresh venv that has torch and torch's own dependencies alone, as a GPU host's Python has.
    They are links in a folder of their own, named by a .pth file: pip counts them as installed
    and would not uninstall anything there (outside its environment)."""
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120)
    links = root / "torch-site"
    links.mkdir()
    for d in _torch_closure():
        for top in {Path(f).parts[0] for f in d.files or [] if not str(f).startswith("..")} - {"__pycache__"}:
            if not (links / top).exists():
                (links / top).symlink_to(Path(d.locate_file(top)))
    site = next((root / "venv/lib").glob("python3*/site-packages"))
    (site / "host-torch.pth").write_text(str(links) + "\n")
    return root / "venv/bin/python"


def test_offline_install_into_a_python_with_torch_alone(wheelhouse: Path, tmp_path: Path) -> None:
    """The run's install, offline (in a network namespace of its own where it can make one), into
    an interpreter with torch alone: the tests collect (and skip: no GPU), a few CPU jobs run
    through the installed job side, the report says so, and torch is the one it had."""
    py = host_python(tmp_path)
    before = subprocess.run(
        [py, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    )
    assert before.returncode == 0 and before.stdout.strip(), before.stderr
    argv = ["bash", str(SCRIPT), "--python", str(py), "--wheelhouse", str(wheelhouse)]
    argv += ["--report-dir", str(tmp_path / "report"), "--no-run-benches"]
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], check=False).returncode == 0:
        argv = ["unshare", "-n", *argv]
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=280, check=False)
    report = (tmp_path / "report/report.md").read_text()
    assert r.returncode == 0, report + r.stderr[-2000:]
    assert "| install | ok |" in report
    assert re.search(r"^0 passed, 0 failed, 0 errors, [1-9]\d* skipped$", report, re.M), report
    assert "| job smoke (cpu: no GPU) | ok |" in report
    assert f"jobs recorded: torch {before.stdout.strip()}" in report
    assert "numpy-" in report.split("- installed: ")[1].splitlines()[0]  # torch does not bring it
    after = subprocess.run(
        [py, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    )
    assert after.stdout == before.stdout
    where = subprocess.run(
        [py, "-P", "-c", "import reprotrain.examples.tiny_cnn as m; print(m.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout  # a real install, not the tree


def test_a_wheelhouse_for_another_python_is_named_at_the_install(wheelhouse: Path, tmp_path: Path) -> None:
    """The run on a host whose Python the wheelhouse was not made for: the install fails saying
    so and how to make the right one, not with pip's "no matching distribution" alone."""
    other = tmp_path / "wh"
    other.mkdir()
    here, there = f"cp{PYVER.replace('.', '')}", f"cp{OTHER.replace('.', '')}"
    for w in wheelhouse.glob("*.whl"):
        shutil.copy(w, other / w.name.replace(f"-{here}-{here}-", f"-{there}-{there}-"))
    assert any(there in w.name for w in other.glob("*.whl"))
    py = host_python(tmp_path)
    argv = ["bash", str(SCRIPT), "--python", str(py), "--wheelhouse", str(other)]
    argv += ["--report-dir", str(tmp_path / "report"), "--no-run-benches"]
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=280, check=False)
    report = (tmp_path / "report/report.md").read_text()
    assert r.returncode == 1, report
    row = next(line for line in report.splitlines() if line.startswith("| install |"))
    assert "| failed" in row and f"made for another Python than this host's {PYVER}" in row, row
    assert f"--make-wheelhouse --python-version {PYVER}" in row and f"-{there}-{there}-" in row
    assert "| tests | skipped |" in report
