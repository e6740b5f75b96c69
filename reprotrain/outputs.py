"""What a run produced, by role: results (a difference is a real one) and incidental outputs
(logs, event files, timing lines: a difference is listed with its reason, never hidden, but
does not make a run diverge). Also where a run's files are, and stdout/stderr compared by line.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from reprotrain.wire import JOB_ARTIFACT_PREFIX, JobFiles, job_artifact, output_artifact

# Files whose differences are incidental unless the spec declares them outputs (README lists them).
INCIDENTAL = (
    ("**/events.out.tfevents.*", "TensorBoard event file"),
    ("wandb/**", "Weights & Biases run directory"),
    ("mlruns/**", "MLflow run directory"),
    ("**/*.log", "log file"),
    ("**/*.prof", "profiler dump"),
    ("**/*.pt.trace.json", "profiler trace"),
)
# Parts of a log line that change from run to run without saying anything about the results. A
# number counts as noise only with a unit or key that says it is a time or a rate: a bare number
# (a loss, a count) never is. Each starts where a number starts, so a long run of digits costs
# one try, not one per digit.
_NUM = r"(?<![\w.])\d+(?:\.\d+)?(?:e[+-]?\d+)?"
NOISE = (
    r"(?<!\d)\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?",  # date-time
    r"(?<![\w.:])\d{1,2}:[0-5]\d(?::[0-5]\d(?:[.,]\d+)?)?(?![\w.:])",  # clock, elapsed, ETA (12:05, 00:03:17)
    _NUM + r" ?(?:it/s|s/it|samples/s|tokens?/s|tok/s|img/s|examples/s|steps/s)(?![\w/])",
    _NUM + r"(?:ns|us|µs|ms|s|sec|secs|min|mins|h|hrs?)(?![\w/])",  # 12.85ms, 3s: unit attached
    _NUM + r" (?:ms|secs?|seconds|minutes|hours)(?![\w/])",  # 3.2 seconds: unit spelled out
    # a time per unit of work, the number before or after it: "ms/batch 24.38" (pytorch/examples),
    # "0.31 s/step", "sec/iter: 1.2"
    r"(?<![\w/])(?:ms|s|secs?|seconds)/(?:batch|step|it|iter|iteration|epoch|sample|token|img|image)"
    r"(?![\w/])\s*[:=]?\s*\d+(?:\.\d+)?(?:e[+-]?\d+)?",
    _NUM + r" ?(?:ms|s|secs?)/(?:batch|step|it|iter|iteration|epoch|sample|token|img|image)(?![\w/])",
    r"(?<![\w])[\w]*(?:runtime|_per_second|elapsed|duration|_time|time_s)['\"]?\s*[:=]\s*"
    + _NUM,  # HF Trainer
    r"\b0x[0-9a-fA-F]{6,}\b",  # addresses in object reprs
)
MAX_LINE = 4096  # longer lines are compared as they are (masking them could cost more than it says)
SHOWN = 300  # characters of a differing line kept in the verdict
# a time in a path: an epoch in seconds (or ns), a date with or without its time, a time of day
_TIME_IN_PATH = re.compile(
    r"(?<!\d)1[5-9]\d{8}(?:\d{9}|\.\d+)?(?!\d)"
    r"|(?<!\d)\d{4}-?\d{2}-?\d{2}(?:[T_ -]?\d{2}[:-]?\d{2}(?:[:-]?\d{2}(?:[.,]\d+)?)?)?(?!\d)"
    r"|(?<!\d)\d{2}[:-]\d{2}[:-]\d{2}(?!\d)"
)
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")  # opened tensor by tensor


@dataclass(frozen=True)
class Role:
    incidental: bool
    reason: str
    declared: bool = False  # the spec named it an output: it stays a result whatever opening it shows


def role(path: str, *, outputs: Iterable[str] = (), volatile: Iterable[str] = ()) -> Role:
    """Whether a difference in this output file is a result's or incidental, and why."""
    if (glob := _first_match(path, outputs)) is not None:
        return Role(False, f"declared an output ({glob})", declared=True)
    if (glob := _first_match(path, volatile)) is not None:
        return Role(True, f"declared volatile ({glob})")
    for glob, kind in INCIDENTAL:
        if _matches(path, glob):
            return Role(True, kind)
    return Role(False, "an output file")


def time_renamed(files: dict[str, str]) -> dict[str, str]:
    """Files in one run only whose path, times masked, matches exactly one file in the other run
    only: a's name → b's name. Anything else in one run only is a difference like any other."""

    def by_mask(state: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for rel, s in files.items():
            if s == state and _TIME_IN_PATH.search(rel):
                out.setdefault(_TIME_IN_PATH.sub("<t>", rel), []).append(rel)
        return out

    a, b = by_mask("only_a"), by_mask("only_b")
    return {a[k][0]: b[k][0] for k in a.keys() & b.keys() if len(a[k]) == len(b[k]) == 1}


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
    real = found.get("real_field") or next((f for f in fields if not f["path"]), None)
    if real:
        return False, f"tensors identical; {real['key']} differs"
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
            if name.startswith(JOB_ARTIFACT_PREFIX):
                path = job_dir / name.removeprefix(JOB_ARTIFACT_PREFIX)
            else:
                path = job_dir / JobFiles.WORK / name.removeprefix("./")
            return path if path.is_file() and not path.is_symlink() else None  # a link is its target text

        return cls(find)

    def job_file(self, name: str) -> Path | None:
        """A file of the run itself (JobFiles.STDOUT, JobFiles.STATE, …)."""
        return self.find(job_artifact(name))

    def output(self, rel: str) -> Path | None:
        """A file the job wrote, by its path relative to the working directory."""
        return self.find(output_artifact(rel))


@dataclass(frozen=True)
class LineDiff:
    line: int  # 1-based
    a: str | None  # None: that run's log ended before this line
    b: str | None
    noise: bool  # the lines differ only in times, durations, rates or addresses


class Masker:
    """Masks the noise in a line: the default patterns and any the spec adds, each on its own (a
    spec's pattern may carry its own flags)."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self._res = [re.compile(p) for p in (*NOISE, *extra)]

    def __call__(self, line: str) -> str:
        if len(line) > MAX_LINE:
            return line
        for r in self._res:
            line = r.sub("<>", line)
        return line


def first_line_diffs(a: Path, b: Path, mask: Masker) -> tuple[LineDiff | None, LineDiff | None]:
    """The first line that differs only in noise, and the first that differs in anything else.
    Read as streams, whole: a long log costs time, not memory."""
    noise = None
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for i, (x, y) in enumerate(itertools.zip_longest(_lines(fa), _lines(fb)), 1):
            if x == y:
                continue
            if x is not None and y is not None and mask(x) == mask(y):
                noise = noise or LineDiff(i, _cut(x), _cut(y), True)
                continue
            return noise, LineDiff(i, _cut(x), _cut(y), False)
    return noise, None


def _lines(f: BinaryIO) -> Iterator[str]:
    """Each line as a terminal would show it last: a progress bar redrawn with \\r is its final state."""
    for raw in f:
        yield raw.decode("utf-8", errors="replace").rstrip("\n").rstrip("\r").rsplit("\r", 1)[-1]


def _cut(line: str | None) -> str | None:
    return line if line is None or len(line) <= SHOWN else line[:SHOWN] + "…"
