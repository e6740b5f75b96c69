"""The result of one job run, as stored: status, metrics, exact trace, digests, fingerprint."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reprotrain.errors import ResultInvalid
from reprotrain.hashing import HASH_NAME
from reprotrain.wire import JobFiles


class Status(StrEnum):
    QUEUED = "QUEUED"  # accepted, waiting for a worker
    RUNNING = "RUNNING"  # claimed by a worker, job process alive
    SUCCEEDED = "SUCCEEDED"  # user code returned; digests and artifacts stored with it
    FAILED = "FAILED"  # user code raised, exited non-zero, or could not start
    CANCELED = "CANCELED"  # stopped on request (SIGTERM, then SIGKILL)
    TIMED_OUT = "TIMED_OUT"  # ran past timeout_s; its whole process group was killed

    @property
    def final(self) -> bool:
        return self not in (Status.QUEUED, Status.RUNNING)


class TraceEntry(BaseModel):
    """One logged step: exact metric values, data-order digest and parameter digest if taken."""

    model_config = ConfigDict(extra="ignore")

    step: int
    metrics: dict[str, Any] = Field(default_factory=dict)
    data: str | None = None
    params: str | None = None


class ParamDigest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    step: int
    overall: str
    tensors: dict[str, str]


class Result(BaseModel):
    model_config = ConfigDict(extra="ignore")

    schema_version: int = 1
    hash: str = HASH_NAME
    job_id: str
    name: str
    spec: dict[str, Any]
    spec_digest: str
    status: Status
    error: dict[str, Any] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    trace: list[TraceEntry] = Field(default_factory=list)
    param_digests: list[ParamDigest] = Field(default_factory=list)
    digests: dict[str, Any] = Field(default_factory=dict)
    determinism: dict[str, Any] = Field(default_factory=dict)
    nondeterministic_ops: list[dict[str, Any]] = Field(default_factory=list)
    fingerprint: dict[str, Any] = Field(default_factory=dict)
    env_digest: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    timing: dict[str, Any] = Field(default_factory=dict)
    artifacts: dict[str, str] = Field(default_factory=dict)

    def save(self, job_dir: Path) -> Path:
        """Write result.json atomically (temporary name, then rename)."""
        path = job_dir / JobFiles.RESULT
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=1))
        tmp.replace(path)
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
    try:
        return Result.model_validate(data), p.parent
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ResultInvalid(f"{p} is not a reprotrain result ({where}: {first['msg']})") from e
