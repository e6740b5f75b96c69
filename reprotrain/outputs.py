"""What a run produced, by role: results (a difference is a real one) and incidental outputs
(logs, event files, timing lines: a difference is listed with its reason, never hidden, but
does not make a run diverge). Also where a run's files are, and stdout/stderr compared by line.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprotrain.wire import JobFiles, job_artifact

# Files whose differences are incidental unless the spec declares them outputs (README lists them).
INCIDENTAL = (
    ("**/events.out.tfevents.*", "TensorBoard event file"),
    ("wandb/**", "Weights & Biases run directory"),
    ("mlruns/**", "MLflow run directory"),
    ("**/*.log", "log file"),
    ("**/*.prof", "profiler dump"),
    ("**/*.pt.trace.json", "profiler trace"),
)
# Parts of a log line that change from run to run without saying anything about the results.
NOISE = (
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}([.,]\d+)?)?(Z|[+-]\d{2}:?\d{2})?",  # date and time
    r"\b\d{1,2}:\d{2}(:\d{2}([.,]\d+)?)?\b",  # clock time, elapsed, ETA (12:05, 00:03:17)
    r"\d+(\.\d+)?(e[+-]?\d+)?\s?(it/s|s/it|samples/s|tokens?/s|tok/s|img/s|examples/s|steps/s|/s)",
    r"\d+(\.\d+)?(e[+-]?\d+)?\s?(ns|us|µs|ms|s|sec|secs|seconds|min|mins|minutes|h|hrs?|hours)\b",
    r"\b0x[0-9a-fA-F]{6,}\b",  # addresses in object reprs
)
_TIME_IN_NAME = re.compile(r"(?<!\d)(1[5-9]\d{8})(?!\d)|\d{4}-?\d{2}-?\d{2}[T_-]?\d{2}[:-]?\d{2}")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")  # opened tensor by tensor
MAX_LOG_BYTES = 32 << 20  # compared line by line up to here; beyond, the digests decide


@dataclass(frozen=True)
class Role:
    incidental: bool
    reason: str


def role(
    path: str, *, outputs: Iterable[str] = (), volatile: Iterable[str] = (), one_side: bool = False
) -> Role:
    """Whether a difference in this output file is a result's or incidental, and why."""
    if (glob := _first_match(path, outputs)) is not None:
        return Role(False, f"declared an output ({glob})")
    if (glob := _first_match(path, volatile)) is not None:
        return Role(True, f"declared volatile ({glob})")
    for glob, kind in INCIDENTAL:
        if _matches(path, glob):
            return Role(True, kind)
    if one_side and _TIME_IN_NAME.search(path.rsplit("/", 1)[-1]):
        return Role(True, "its name carries a time")
    return Role(False, "an output file")


def _first_match(path: str, globs: Iterable[str]) -> str | None:
    return next((g for g in globs if _matches(path, g)), None)


def _matches(path: str, glob: str) -> bool:
    """fnmatch, where `*` also crosses `/` and a leading `**/` may match nothing."""
    return fnmatch.fnmatchcase(path, glob) or (glob.startswith("**/") and fnmatch.fnmatchcase(path, glob[3:]))


def is_checkpoint(path: str) -> bool:
    return path.endswith(CHECKPOINT_SUFFIXES)


def checkpoint_role(found: dict[str, Any]) -> tuple[bool, str]:
    """What a comparison of two checkpoints whose bytes differ found: (incidental, why)."""
    if found.get("error"):
        return False, str(found["error"])
    fields = list(found.get("fields") or [])
    if found.get("first_tensor"):
        return False, f"tensor {found['first_tensor']['key']} differs"
    if found.get("structure"):
        return False, f"tensors identical; keys differ ({found['structure'][0]['key']})"
    real = [f for f in fields if not f["path"]]
    if real:
        return False, f"tensors identical; {real[0]['key']} differs"
    if fields:
        return True, f"tensors identical; only paths differ ({fields[0]['key']})"
    return True, "tensors identical; container bytes differ"


@dataclass(frozen=True)
class RunFiles:
    """Where one run's files are: a local run directory, or a stored job's artifacts by name."""

    find: Callable[[str], Path | None]  # artifact name → path

    @classmethod
    def local(cls, job_dir: Path) -> RunFiles:
        def find(name: str) -> Path | None:
            rel = name.removeprefix("_job/") if name.startswith("_job/") else f"{JobFiles.WORK}/{name}"
            path = job_dir / rel
            return path if path.is_file() else None

        return cls(find)

    def job_file(self, name: str) -> Path | None:
        """A file of the run itself (JobFiles.STDOUT, JobFiles.STATE, …)."""
        return self.find(job_artifact(name))

    def output(self, rel: str) -> Path | None:
        """A file the job wrote, by its path relative to the working directory."""
        return self.find(rel)


@dataclass(frozen=True)
class LineDiff:
    line: int  # 1-based
    a: str | None  # None: that run's log ended before this line
    b: str | None
    noise: bool  # the lines differ only in times, durations, rates or addresses


class Masker:
    """Masks the noise in a line: the default patterns and any the spec adds."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self._re = re.compile("|".join(f"(?:{p})" for p in (*NOISE, *extra)))

    def __call__(self, line: str) -> str:
        return self._re.sub("<>", line)


def first_line_diffs(a: Path, b: Path, mask: Masker) -> tuple[LineDiff | None, LineDiff | None]:
    """The first line that differs only in noise, and the first that differs in anything else."""
    la, lb = _lines(a), _lines(b)
    noise = None
    for i in range(max(len(la), len(lb))):
        x, y = (la[i] if i < len(la) else None), (lb[i] if i < len(lb) else None)
        if x == y:
            continue
        if x is not None and y is not None and mask(x) == mask(y):
            noise = noise or LineDiff(i + 1, x, y, True)
            continue
        return noise, LineDiff(i + 1, x, y, False)
    return noise, None


def _lines(path: Path) -> list[str]:
    with open(path, "rb") as f:
        return f.read(MAX_LOG_BYTES).decode("utf-8", errors="replace").splitlines()
