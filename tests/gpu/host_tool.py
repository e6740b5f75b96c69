"""Helpers of run-on-gpu-host.sh, standard library only (they run before anything is installed).

python tests/gpu/host_tool.py facts                  # JSON: Python, torch, CUDA, GPUs of this host
python tests/gpu/host_tool.py pins WHEELHOUSE LOCK... # warns of wheels the lock files do not pin
python tests/gpu/host_tool.py missing LOG...          # the requirements pip found no wheel for
python tests/gpu/host_tool.py foreign WHEELHOUSE X.Y  # its compiled wheels another Python needs
python tests/gpu/host_tool.py render --facts F --stages S --junit J --install-log L --bench B
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

# the requirements pip's resolver names when it fails: the one it found nothing for, the package
# whose dependency it could not meet and that dependency, or what was asked for and constrained
NAMED = re.compile(
    r"No matching distribution found for (\S+)|depends on (\S+)|Cannot install (\S+)"
    r"|The user requested (?:\(constraint\) )?(\S+)"
)
INSTALLED = re.compile(r"^Successfully installed (.+)$", re.M)
KEPT = re.compile(r"^Requirement already satisfied: (\S+) in .* \(([^()]+)\)$", re.M)  # … (version)
NAME = re.compile(r"[A-Za-z0-9._-]+")  # a requirement's name, before its version specifier
VERBOSE_RESULT = re.compile(r"^(\S+::\S+(?:\[[^\]]*\])?) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)", re.M)


# the oldest host this suite runs on. Python: pyproject's requires-python. torch: 2.3 is the
# first built for numpy 2's ABI, and requirements-host.txt brings numpy 2 (an older torch's
# .numpy() and from_numpy() fail with it); the job side's knobs exist from it on.
MIN_PYTHON = (3, 11)
MIN_TORCH = (2, 3)


def major_minor(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as "2.3.1+cu121" or "3.12.4"; (0, 0) if none."""
    m = re.match(r"\s*(\d+)\.(\d+)", version)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# facts ------------------------------------------------------------------------------------------


def facts() -> dict[str, Any]:
    """This host as the report shows it: read here, in a process of its own, CUDA started."""
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "libc": " ".join(platform.libc_ver()),
    }
    smi = shutil.which("nvidia-smi")
    if smi:
        out["nvidia_smi"] = _run([smi, "-L"])
        out["driver_smi"] = _run([smi, "--query-gpu=driver_version", "--format=csv,noheader"])
    try:
        out["driver_proc"] = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except (OSError, IndexError):
        out["driver_proc"] = None
    try:
        import torch
    except ImportError as e:
        out["torch_error"] = str(e)
        return out
    out["torch"] = torch.__version__
    out["torch_cuda_build"] = torch.version.cuda
    out["cuda_available"] = torch.cuda.is_available()
    if out["cuda_available"]:
        out["cudnn"] = torch.backends.cudnn.version()
        out["gpus"] = [
            f"{p.name} (capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB)"
            for p in map(torch.cuda.get_device_properties, range(torch.cuda.device_count()))
        ]
    try:
        import numpy

        out["numpy"] = numpy.__version__
    except ImportError:
        out["numpy"] = None
    return out


def verdict(f: dict[str, Any]) -> tuple[int, str]:
    """(exit status, line) for the run: 0 torch sees a GPU, 3 torch without one, 1 no torch."""
    if not f.get("torch"):
        return 1, f"no torch in {f.get('executable')}: {f.get('torch_error')}"
    exe, python, torch = f.get("executable"), str(f.get("python", "?")), str(f["torch"])
    if major_minor(python) < MIN_PYTHON:
        return 1, f"Python {python} at {exe}: reprotrain needs Python 3.11 or newer (--python another)"
    if major_minor(torch) < MIN_TORCH:
        return 1, (
            f"torch {torch} in {exe} is older than 2.3, the oldest this suite runs on: the numpy 2 "
            "that requirements-host.txt brings breaks an older torch's .numpy() (docs/gpu-host.md; "
            "--python another)"
        )
    line = f"torch {torch}, built for CUDA {f.get('torch_cuda_build')}, Python {python}"
    if not f.get("cuda_available"):
        return 3, line + "; torch sees no CUDA device"
    return 0, line + "; " + "; ".join(f.get("gpus") or [])


def _run(argv: list[str]) -> str | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


# wheelhouse ---------------------------------------------------------------------------------------


def wheels(wheelhouse: Path) -> list[tuple[str, str, str]]:
    """(name, version, file) of each wheel; names normalized."""
    out = []
    for f in sorted(wheelhouse.glob("*.whl")):
        name, version = f.name.split("-")[:2]
        out.append((norm(name), version, f.name))
    return out


def pins(paths: list[Path]) -> dict[str, str]:
    """name → version of each `name==version` line of requirement files."""
    found = {}
    for p in paths:
        for line in p.read_text().splitlines():
            m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)", line)
            if m:
                found[norm(m.group(1))] = m.group(2)
    return found


def unpinned(wheelhouse: Path, locks: list[Path]) -> list[str]:
    """What in the wheelhouse the lock files do not pin, or pin at another version."""
    pinned = pins(locks)
    notes = []
    for name, version, file in wheels(wheelhouse):
        if name not in pinned:
            notes.append(f"{file}: {name} is not pinned in {', '.join(p.name for p in locks)}")
        elif pinned[name] != version:
            notes.append(f"{file}: the lock pins {name}=={pinned[name]}")
    return notes


def would(report: dict[str, Any]) -> str:
    """What a `pip install --dry-run --report` would install, in a line."""
    items = [f"{i['metadata']['name']} {i['metadata']['version']}" for i in report.get("install", [])]
    return f"{len(items)} wheels: " + ", ".join(items)


def fits(file: str, python: str, platforms: list[str]) -> bool:
    """Whether a wheel (by its file name's tags) installs on CPython `python` (X.Y) on one of
    `platforms`: pure Python, this version's own, or a stable-ABI one for an older version."""
    try:
        pys, abis, plats = file.removesuffix(".whl").split("-")[-3:]
    except ValueError:
        return False
    major, minor = (int(x) for x in python.split("."))
    here = f"cp{major}{minor}"
    if not ({"any", *platforms} & set(plats.split("."))):
        return False
    for py in pys.split("."):
        for abi in abis.split("."):
            if abi == "none" and (py in (f"py{major}", f"py{major}{minor}", here) or py == "py2.py3"):
                return True
            if abi == here and py == here:
                return True
            old = re.fullmatch(rf"cp{major}(\d+)", py)
            if abi == "abi3" and old and int(old.group(1)) <= minor:
                return True
    return False


def missing(
    logs: list[str], wheelhouse: Path, python: str, platforms: list[str], pinned: dict[str, str]
) -> list[str]:
    """What the wheelhouse lacks for CPython `python` on `platforms`, from pip's failed
    resolutions (`logs`): each package they name that has no wheel here that fits (at the lock's
    version, where it pins one)."""
    have: dict[str, list[tuple[str, str]]] = {}
    for name, version, file in wheels(wheelhouse):
        have.setdefault(name, []).append((version, file))
    found: dict[str, str] = {}
    for text in logs:
        for m in NAMED.finditer(text):
            req = next(g for g in m.groups() if g)
            name = norm(NAME.match(req)[0])
            if name in found:
                continue
            candidates = have.get(name, [])
            usable = [f for v, f in candidates if fits(f, python, platforms) and pinned.get(name, v) == v]
            if usable:
                continue  # named in the explanation, but not what is missing
            pin = f" (pinned: =={pinned[name]})" if name in pinned else ""
            files = ", ".join(f for _, f in candidates)
            found[name] = f"{req}{pin}" + (f"; the wheelhouse has only {files}" if files else "")
    return list(found.values())


def foreign(wheelhouse: Path, python: str) -> list[str]:
    """The wheelhouse's compiled wheels that CPython `python` (X.Y) cannot install, whatever the
    platform: those of a wheelhouse made for another Python version."""
    out = []
    for _, _, file in wheels(wheelhouse):
        plats = file.removesuffix(".whl").split("-")[-1].split(".")
        if not fits(file, python, plats):
            out.append(file)
    return out


# report -------------------------------------------------------------------------------------------


def junit_summary(path: Path) -> dict[str, Any] | None:
    """Counts and the failing tests (name, first line of the message) of a pytest junit file."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    failures: list[tuple[str, str]] = []
    skips: dict[str, int] = {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag: child for child in case}
        if "failure" in kinds or "error" in kinds:
            tag = "failure" if "failure" in kinds else "error"
            counts["failed" if tag == "failure" else "error"] += 1
            message = (kinds[tag].get("message") or kinds[tag].text or "").strip().splitlines()
            failures.append((name, message[0][:200] if message else tag))
        elif "skipped" in kinds:
            counts["skipped"] += 1
            reason = (kinds["skipped"].get("message") or "").strip()
            skips[reason] = skips.get(reason, 0) + 1
        else:
            counts["passed"] += 1
    return {"counts": counts, "failures": failures, "skips": skips}


def verbose_summary(text: str) -> dict[str, str]:
    """Test → outcome from `pytest -v` output (when the run was cut off before its junit file)."""
    return {m.group(1): m.group(2) for m in VERBOSE_RESULT.finditer(text)}


def install_summary(text: str) -> tuple[list[str], list[str]]:
    """(installed from the wheelhouse, kept as the host had them) from pip's install output."""
    installed = [w for m in INSTALLED.finditer(text) for w in m.group(1).split()]
    kept = sorted({f"{norm(NAME.match(m.group(1))[0])} {m.group(2)}" for m in KEPT.finditer(text)})
    return installed, kept


def _read(path: Path | None) -> str:
    try:
        return path.read_text(errors="replace") if path else ""
    except OSError:
        return ""


def render(args: argparse.Namespace) -> str:
    f: dict[str, Any] = {}
    try:
        f = json.loads(_read(args.facts) or "{}")
    except ValueError:
        pass
    lines = ["# GPU host report", ""]
    lines += [f"`{args.command}`", ""] if args.command else []
    lines += ["## Host", "", "| | |", "|---|---|"]
    lock_torch = pins([args.lock]).get("torch") if args.lock else None
    torch_line = f.get("torch") or f"not importable: {f.get('torch_error', '?')}"
    if f.get("torch"):
        torch_line += f", built for CUDA {f.get('torch_cuda_build')}"
        if lock_torch and not str(f["torch"]).startswith(lock_torch):
            torch_line += f" (requirements.lock pins {lock_torch}: the host's own is used)"
    rows = [
        ("Python", f"{f.get('python', '?')} ({f.get('executable', '?')})"),
        ("platform", f"{f.get('platform', '?')}, {f.get('libc', '?')}"),
        ("torch", torch_line),
        ("numpy (before the install)", str(f.get("numpy"))),
        ("CUDA visible to torch", str(f.get("cuda_available", False))),
        ("cuDNN", str(f.get("cudnn"))),
        ("GPUs (torch)", "; ".join(f.get("gpus") or []) or "none"),
        ("nvidia-smi -L", (f.get("nvidia_smi") or "not available").replace("\n", "; ")),
        (
            "driver",
            f"{f.get('driver_smi')} (nvidia-smi); /proc/driver/nvidia/version: {f.get('driver_proc')}",
        ),
    ]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "## Stages", "", "| stage | result | seconds | note |", "|---|---|---:|---|"]
    for row in _read(args.stages).splitlines():
        cells = [*row.split("\t"), "", "", ""][:4]
        lines.append("| " + " | ".join(cells) + " |")
    installed, kept = install_summary(_read(args.install_log))
    lines += ["", "## Install (offline, from the wheelhouse)", ""]
    lines.append("- installed: " + (", ".join(installed) or "nothing"))
    lines.append("- kept as the host had them: " + (", ".join(kept) or "none"))
    lines += ["", "## Tests (tests/gpu)", ""]
    summary = junit_summary(args.junit) if args.junit else None
    if summary is not None:
        c = summary["counts"]
        lines.append(
            f"{c['passed']} passed, {c['failed']} failed, {c['error']} errors, {c['skipped']} skipped"
        )
        for name, message in summary["failures"]:
            lines.append(f"- FAILED {name}: {message}")
        for reason, n in summary["skips"].items():
            lines.append(f"- skipped ({n}): {reason}")
    else:
        outcomes = verbose_summary(_read(args.pytest_log))
        lines.append("no junit file (the run was cut off or did not start); from pytest's own output:")
        lines += [f"- {outcome} {name}" for name, outcome in outcomes.items()] or ["- nothing ran"]
    lines += ["", "## Benchmarks (bench/gpu.py)", ""]
    bench = _read(args.bench).strip()
    lines.append(bench or "not run (see Stages)")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("facts")
    p = sub.add_parser("verdict")
    p.add_argument("facts", type=Path)
    p = sub.add_parser("pins")
    p.add_argument("wheelhouse", type=Path)
    p.add_argument("locks", type=Path, nargs="+")
    p = sub.add_parser("would")
    p.add_argument("report", type=Path)
    p = sub.add_parser("missing")
    p.add_argument("--python-version", required=True)
    p.add_argument("--platform", action="append", required=True)
    p.add_argument("--lock", type=Path, action="append", default=[])
    p.add_argument("wheelhouse", type=Path)
    p.add_argument("logs", type=Path, nargs="+")
    p = sub.add_parser("foreign")
    p.add_argument("wheelhouse", type=Path)
    p.add_argument("python")
    p = sub.add_parser("render")
    for name in ("facts", "stages", "junit", "install-log", "pytest-log", "bench", "lock"):
        p.add_argument(f"--{name}", type=Path)
    p.add_argument("--command", default="")
    args = ap.parse_args()
    if args.cmd == "facts":
        print(json.dumps(facts(), indent=1))
    elif args.cmd == "verdict":
        status, line = verdict(json.loads(args.facts.read_text()))
        print(line)
        sys.exit(status)
    elif args.cmd == "pins":
        for note in unpinned(args.wheelhouse, args.locks):
            print(note)
    elif args.cmd == "would":
        print(would(json.loads(args.report.read_text())))
    elif args.cmd == "missing":
        logs = [_read(p) for p in args.logs]
        for name in missing(logs, args.wheelhouse, args.python_version, args.platform, pins(args.lock)):
            print(name)
    elif args.cmd == "foreign":
        for file in foreign(args.wheelhouse, args.python):
            print(file)
    else:
        sys.stdout.write(render(args))


if __name__ == "__main__":
    main()
