"""What the launcher hands a job process: the spec and where everything of this job lives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict


class LaunchRequest(BaseModel):
    """One job to start; plain JSON so it crosses the fork server's socket."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    spec: dict[str, Any]
    job_dir: str
    code_dir: str | None = None  # put on sys.path / PYTHONPATH (function mode, local runs)
    inputs: dict[str, str] = {}  # name → path, for ctx.inputs and REPROTRAIN_INPUT_<NAME>
    input_digests: dict[str, Any] = {}
    bundle: str | None = None

    @property
    def dir(self) -> Path:
        return Path(self.job_dir)

    @property
    def workspace(self) -> Path:
        return self.dir / "work"
