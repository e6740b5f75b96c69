"""The result of one job run, as stored: status, metrics, exact trace, digests, fingerprint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError

from reprotrain.bisect import BisectReport, PreflightRecord
from reprotrain.errors import ResultInvalid
from reprotrain.files import write_atomic
from reprotrain.fingerprint import EffectiveKnobs, Fingerprint
from reprotrain.hashing import HASH_NAME, digest_json
from reprotrain.isolation import Isolation
from reprotrain.model import Frozen, Sparse, Stored
from reprotrain.policy import Knobs
from reprotrain.spec import Policy
from reprotrain.status import Status
from reprotrain.wire import JobFiles


class JobError(Sparse):
    """Why a job did not succeed, in one line: the exception type (or what ended it) and message."""

    type: str = Field(examples=["ZeroDivisionError"])
    message: str = Field(examples=["division by zero"])
    nondeterministic_op: str | None = Field(None, description="the op strict mode refused, if that was it")
    detail: str | None = Field(None, examples=["command exited with status 1"], description="how it ended")
    traceback: str | None = Field(None, description="the last Python traceback on the job's stderr")
    stderr_tail: str | None = Field(None, description="the last lines of the job's stderr")


class TraceEntry(Stored):
    """One logged step: exact metric values, data-order digest and parameter digest if taken
    (built from an event; its `kind` is not kept)."""

    step: int
    metrics: dict[str, Any] = Field(default_factory=dict)
    data: str | None = None
    params: str | None = None


class ParamDigest(Stored):
    step: int
    overall: str
    tensors: dict[str, str]


class NondeterministicOp(Stored):
    op: str
    count: int
    message: str


class DeterminismRecord(Stored):
    """The policy, each knob as asked for, and each as torch reported it after applying them."""

    policy: Policy
    requested: Knobs
    effective: EffectiveKnobs
    process_seeds: list[int] | None = Field(
        None,
        description="script mode: the torch seed each other Python process the command started "
        "ended with (the job process's own is effective.torch_initial_seed)",
    )


class ChildTiming(Frozen):
    """Monotonic clock readings in the job process (comparable with its supervisor's)."""

    process_start: float
    user_start: float | None = None
    user_end: float | None = None


class ChildRecord(Frozen):
    """What the job process hands its supervisor (JobFiles.CHILD), written once as it ends."""

    status: Literal[Status.SUCCEEDED, Status.FAILED]
    error: JobError | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    digests: dict[str, Any] = Field(default_factory=dict, description="model and optimizer state")
    determinism: DeterminismRecord | None = None
    fingerprint: Fingerprint | None = None
    state_file: str | None = None
    timing: ChildTiming
    bisect: BisectReport | None = None
    preflight: PreflightRecord | None = None
    resumed: dict[str, Any] | None = None  # a resumed attempt at its checkpoint: from_step, checkpoint, logs


class Resume(Stored):
    """One attempt that went on from a checkpoint of an earlier one."""

    attempt: int = Field(description="the attempt that resumed (the first is 1)")
    worker: str | None = Field(None, description="the worker that ran it")
    from_step: int | None = Field(None, description="the last step logged before the checkpoint")
    checkpoint: int = Field(description="the checkpoint's number in the run")
    logs: int = Field(0, description="steps logged before the checkpoint")
    restored: bool | None = Field(
        None,
        description="whether the job reached the checkpoint's step boundary and went on from it "
        "(False: it ran from the start; None: the attempt did not end)",
    )
    note: str | None = Field(None, description="why it was not resumed")


CODE_TREE_MAX = 256  # files whose digests a code record lists one by one; past it, only the whole


class CodeRecord(Sparse):
    """The code a job ran from, where it ran from a copy (script mode; a bundle's files): the
    digest of every file's path and content, and each file's digest where there are few enough
    files, so that a verdict can name what changed."""

    digest: str = Field(description="of every (path, file digest) in path order")
    files: int = Field(description="how many files")
    tree: dict[str, str] | None = Field(
        None, description=f"each file's digest by path (up to {CODE_TREE_MAX} files)"
    )

    @classmethod
    def of(cls, manifest: dict[str, str]) -> CodeRecord:
        tree = dict(sorted(manifest.items()))
        return cls(
            digest=digest_json(list(tree.items())),
            files=len(tree),
            tree=tree if len(tree) <= CODE_TREE_MAX else None,
        )


def _none_if_empty(v: Any) -> Any:
    return None if v == {} else v  # results stored before these were typed said {} for "none"


class Result(Stored):
    """One run, as stored and compared: the contract between a worker, the store and every reader."""

    schema_version: int = 1
    hash: str = HASH_NAME
    job_id: str
    name: str
    spec: dict[str, Any]
    spec_digest: str
    status: Status
    error: JobError | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    trace: list[TraceEntry] = Field(default_factory=list)
    param_digests: list[ParamDigest] = Field(default_factory=list)
    digests: dict[str, Any] = Field(default_factory=dict)
    determinism: Annotated[DeterminismRecord | None, BeforeValidator(_none_if_empty)] = None
    nondeterministic_ops: list[NondeterministicOp] = Field(default_factory=list)
    fingerprint: Annotated[Fingerprint | None, BeforeValidator(_none_if_empty)] = None
    env_digest: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    timing: dict[str, Any] = Field(default_factory=dict)
    artifacts: dict[str, str] = Field(default_factory=dict)
    isolation: Isolation | None = None  # how the run was confined (None: stored before it was recorded)
    code: CodeRecord | None = Field(None, description="the code it ran from, where it ran from a copy")
    bisect: BisectReport | None = Field(None, description="a bisect job's report, or a failed pre-flight's")
    preflight: PreflightRecord | None = Field(None, description="the pre-flight check this run passed")
    resumes: list[Resume] = Field(
        default_factory=list, description="each attempt that went on from an earlier one's checkpoint"
    )

    def save(self, job_dir: Path) -> Path:
        """Write result.json atomically (temporary name, then rename)."""
        path = job_dir / JobFiles.RESULT
        write_atomic(path, self.model_dump_json(indent=1))
        return path


def load_result(path: str | Path) -> tuple[Result, Path]:
    """A result and its job directory, from result.json or the directory holding it."""
    p = Path(path)
    if p.is_dir():
        p = p / JobFiles.RESULT
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultInvalid(f"no result at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultInvalid(f"cannot read result {p}: {e}") from e
    return parse_result(data, str(p)), p.parent


def parse_result(data: Any, what: str) -> Result:
    """A result from its JSON; one that does not read is ResultInvalid, naming `what` and the field."""
    try:
        return Result.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ResultInvalid(f"{what} is not a reprotrain result ({where}: {first['msg']})") from e
