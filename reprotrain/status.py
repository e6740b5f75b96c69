"""The one job status enum: where a job is in its life, and whether that life has ended."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    QUEUED = "QUEUED"  # accepted, waiting for a worker
    RUNNING = "RUNNING"  # claimed by a worker, job process alive
    SUCCEEDED = "SUCCEEDED"  # user code returned; digests and artifacts stored with it
    FAILED = "FAILED"  # user code raised, exited non-zero, or could not start
    CANCELED = "CANCELED"  # stopped on request (SIGTERM, then SIGKILL)
    TIMED_OUT = "TIMED_OUT"  # ran past timeout_s; its whole process group was killed

    @property
    def is_final(self) -> bool:
        """The job has ended: nothing about it changes any more (but a verdict computed of it)."""
        return self not in (Status.QUEUED, Status.RUNNING)
