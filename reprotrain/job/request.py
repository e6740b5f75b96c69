"""What the launcher hands a job process: the spec and where everything of this job lives."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from reprotrain.isolation import NO_PLAN, Plan
from reprotrain.model import Frozen
from reprotrain.spec import JobSpec


class LaunchRequest(Frozen):
    """One job to start; JSON on the fork server's socket (the spec is parsed once, here)."""

    job_id: str
    spec: JobSpec
    job_dir: str
    work_dir: str  # the job's working directory: a canonical slot (reprotrain/job/slots.py)
    code_dir: str | None = None  # put on sys.path / PYTHONPATH (function mode, local runs)
    inputs: dict[str, str] = Field(default_factory=dict)  # name → path, for ctx.inputs and the env
    confine: Plan = NO_PLAN  # entered before anything else (reprotrain/job/confine.py)
    resume: str | None = None  # a checkpoint directory to go on from (reprotrain/job/resume.py)

    @property
    def dir(self) -> Path:
        return Path(self.job_dir)

    @property
    def workspace(self) -> Path:
        return Path(self.work_dir)
