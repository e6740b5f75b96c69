"""tests/gpu/host_tool.py: which wheels fit a host, what a failed resolution lacks, and the report's
reading of pip's and pytest's output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tests.gpu import host_tool as ht

MANYLINUX = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def test_which_wheels_fit() -> None:
    numpy = "numpy-2.4.6-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
    assert ht.fits(numpy, "3.12", MANYLINUX)
    assert not ht.fits(numpy, "3.13", MANYLINUX)  # another CPython's ABI
    assert not ht.fits(numpy, "3.12", ["manylinux_2_17_x86_64"])  # needs a newer glibc
    assert ht.fits("pydantic-2.14.4-py3-none-any.whl", "3.11", MANYLINUX)
    assert ht.fits("cryptography-50.0.2-cp39-abi3-manylinux_2_28_x86_64.whl", "3.12", MANYLINUX)
    assert not ht.fits("cryptography-50.0.2-cp313-abi3-manylinux_2_28_x86_64.whl", "3.12", MANYLINUX)
    assert not ht.fits("xxhash-4.1.0-cp312-cp312-musllinux_1_2_x86_64.whl", "3.12", MANYLINUX)
    assert not ht.fits("blake3-1.0.11-cp312-cp312-manylinux_2_17_aarch64.whl", "3.12", MANYLINUX)


def _wheelhouse(tmp_path: Path, *names: str) -> Path:
    tmp_path.mkdir(exist_ok=True)
    for n in names:
        (tmp_path / n).write_bytes(b"")
    return tmp_path


NO_MATCH = """ERROR: Could not find a version that satisfies the requirement xxhash>=3.4 (from versions: none)
ERROR: No matching distribution found for xxhash>=3.4
"""
CONFLICT = """ERROR: Cannot install pydantic==2.14.4 because these package versions have conflicting \
dependencies.

The conflict is caused by:
    pydantic 2.14.4 depends on typing-extensions>=4.16.0
    The user requested (constraint) typing-extensions==4.16.0
"""


def test_missing_names_what_no_wheel_fits(tmp_path: Path) -> None:
    wh = _wheelhouse(
        tmp_path,
        "pydantic-2.14.4-py3-none-any.whl",
        "numpy-2.4.6-cp312-cp312-manylinux_2_28_x86_64.whl",
    )
    pins = {"xxhash": "4.1.0", "typing-extensions": "4.16.0", "pydantic": "2.14.4", "numpy": "2.4.6"}
    found = ht.missing([NO_MATCH, CONFLICT], wh, "3.12", MANYLINUX, pins)
    # pydantic is named by pip but fits: what it needs is what is missing
    assert found == ["xxhash>=3.4 (pinned: ==4.1.0)", "typing-extensions>=4.16.0 (pinned: ==4.16.0)"]
    numpy = "ERROR: No matching distribution found for numpy>=2"
    assert ht.missing([numpy], wh, "3.12", MANYLINUX, pins) == []
    only = "the wheelhouse has only numpy-2.4.6-cp312-cp312-manylinux_2_28_x86_64.whl"
    assert ht.missing([numpy], wh, "3.13", MANYLINUX, pins) == [f"numpy>=2 (pinned: ==2.4.6); {only}"]
    assert ht.missing([numpy], wh, "3.12", MANYLINUX, {"numpy": "2.5.0"})  # not the lock's version


def test_unpinned_wheels_are_named(tmp_path: Path) -> None:
    wh = _wheelhouse(tmp_path / "wh", "numpy-2.4.6-cp312-cp312-x.whl", "extra_pkg-1.0-py3-none-any.whl")
    lock = tmp_path / "lock.txt"
    lock.write_text("# a comment\nnumpy==2.4.5\nPyYAML==6.0.4  # trailing\n")
    assert ht.pins([lock]) == {"numpy": "2.4.5", "pyyaml": "6.0.4"}
    notes = ht.unpinned(wh, [lock])
    assert len(notes) == 2
    assert "the lock pins numpy==2.4.5" in notes[1] and "extra-pkg is not pinned" in notes[0]


PIP_OUT = """Looking in links: /wh
Requirement already satisfied: numpy>=2 in /opt/torch/.venv/lib/python3.12/site-packages (from -r tests/gpu/requirements-host.txt (line 9)) (2.5.2)
Requirement already satisfied: typing-extensions>=4.14.1 in /opt/site (from pydantic>=2.7->-r r.txt (line 10)) (4.15.0)
Processing /wh/pydantic-2.14.4-py3-none-any.whl
Successfully installed annotated-types-0.8.0 pydantic-2.14.4 pydantic-core-2.50.5
"""  # noqa: E501


def test_install_summary() -> None:
    installed, kept = ht.install_summary(PIP_OUT)
    assert installed == ["annotated-types-0.8.0", "pydantic-2.14.4", "pydantic-core-2.50.5"]
    assert kept == ["numpy 2.5.2", "typing-extensions 4.15.0"]


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.gpu.test_gpu" name="test_a" time="1.0"/>
<testcase classname="tests.gpu.test_gpu" name="test_b" time="2.0"><failure message="assert 'FAILED' == 'SUCCEEDED'&#10;more">tb</failure></testcase>
<testcase classname="tests.gpu.test_gpu" name="test_c" time="0"><skipped message="no CUDA device visible to torch"/></testcase>
<testcase classname="tests.gpu.test_gpu" name="test_d" time="0"><error message="fixture failed">tb</error></testcase>
</testsuite></testsuites>"""  # noqa: E501


def test_report(tmp_path: Path) -> None:
    (tmp_path / "junit.xml").write_text(JUNIT)
    (tmp_path / "facts.json").write_text(
        json.dumps(
            {"python": "3.12.3", "torch": "2.11.0+cu130", "torch_cuda_build": "13.0", "cuda_available": True}
        )
    )
    (tmp_path / "lock.txt").write_text("torch==2.13.0\n")
    (tmp_path / "stages.tsv").write_text(
        "install\tok\t20\treprotrain at /x\ntests\tfailed (status 1)\t90\t\n"
    )
    (tmp_path / "install.log").write_text(PIP_OUT)
    (tmp_path / "bench.md").write_text("| model | off |\n|---|---|\n| conv | 1.0 |\n")
    names = {"facts": "facts.json", "junit": "junit.xml", "lock": "lock.txt", "stages": "stages.tsv"}
    names |= {"install_log": "install.log", "bench": "bench.md"}
    paths = {k: tmp_path / f for k, f in names.items()}
    text = ht.render(argparse.Namespace(**paths, pytest_log=None, command="run-on-gpu-host.sh"))
    assert "2.11.0+cu130, built for CUDA 13.0 (requirements.lock pins 2.13.0: the host's own is used)" in text
    assert "1 passed, 1 failed, 1 errors, 1 skipped" in text
    assert "- FAILED tests.gpu.test_gpu::test_b: assert 'FAILED' == 'SUCCEEDED'" in text
    assert "- FAILED tests.gpu.test_gpu::test_d: fixture failed" in text
    assert "| tests | failed (status 1) | 90 |  |" in text
    assert "- kept as the host had them: numpy 2.5.2, typing-extensions 4.15.0" in text
    assert text.rstrip().endswith("| conv | 1.0 |")


def test_report_without_junit_reads_pytest_s_own_lines(tmp_path: Path) -> None:
    log = tmp_path / "pytest.log"
    log.write_text(
        "tests/gpu/test_gpu.py::test_a PASSED [ 10%]\ntests/gpu/test_gpu.py::test_b[histc] FAILED [ 20%]\n"
    )
    args = argparse.Namespace(
        facts=None, junit=tmp_path / "none.xml", lock=None, stages=None, install_log=None, bench=None
    )
    text = ht.render(argparse.Namespace(**vars(args), pytest_log=log, command=""))
    assert "- PASSED tests/gpu/test_gpu.py::test_a" in text
    assert "- FAILED tests/gpu/test_gpu.py::test_b[histc]" in text
    assert "not importable" in text and "not run (see Stages)" in text


def test_verdict() -> None:
    assert ht.verdict({"torch_error": "No module named 'torch'", "executable": "/py"})[0] == 1
    assert ht.verdict({"torch": "2.13.0+cpu", "python": "3.12.3", "cuda_available": False})[0] == 3
    gpu = {"cuda_available": True, "gpus": ["NVIDIA H200"], "executable": "/py"}
    status, line = ht.verdict({"torch": "2.11.0+cu130", "python": "3.12.3", **gpu})
    assert status == 0 and line.endswith("NVIDIA H200")
    assert ht.verdict({"torch": "2.3.0+cu121", "python": "3.11.9", **gpu})[0] == 0  # the oldest of each


def test_verdict_refuses_a_host_too_old() -> None:
    """An older torch or Python stops the run at its facts, saying what it needs."""
    gpu = {"cuda_available": True, "gpus": ["NVIDIA A100"], "executable": "/opt/py"}
    status, line = ht.verdict({"torch": "2.2.2+cu121", "python": "3.11.4", **gpu})
    assert status == 1 and "torch 2.2.2+cu121 in /opt/py is older than 2.3" in line and "numpy 2" in line
    status, line = ht.verdict({"torch": "1.13.1", "python": "3.10.12", **gpu})
    assert status == 1 and "Python 3.10.12 at /opt/py: reprotrain needs Python 3.11" in line
    assert ht.verdict({"torch": "2.10.0", "python": "3.11.0", **gpu})[0] == 0  # 2.10 is not 2.1
    assert ht.major_minor("2.13.0a0+git1234") == (2, 13) and ht.major_minor("dev") == (0, 0)


def test_foreign_wheels_are_those_of_another_python(tmp_path: Path) -> None:
    wh = _wheelhouse(
        tmp_path,
        "numpy-2.4.6-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "pydantic-2.14.4-py3-none-any.whl",
        "cryptography-50.0.2-cp39-abi3-manylinux_2_28_x86_64.whl",
        "blake3-1.0.11-cp312-cp312-manylinux_2_17_aarch64.whl",  # another platform: still cp312's
    )
    assert ht.foreign(wh, "3.12") == []
    assert ht.foreign(wh, "3.11") == [
        "blake3-1.0.11-cp312-cp312-manylinux_2_17_aarch64.whl",
        "numpy-2.4.6-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    ]
