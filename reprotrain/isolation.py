"""How a job is confined: the worker's plan for one job, and the record its result keeps.

Modes, strongest first (README, "Security model"; docs/self-hosting.md for compose):

namespaces  the worker is root: the job gets its own mount, PID and (with `network: none`)
            network namespace, a read-only view of the filesystem but for its own directories,
            the worker's data hidden, and it runs as another uid with no capabilities
userns      an ordinary user: the same, inside a user namespace of its own (same uid, no
            capabilities in it)
none        the kernel allows neither: the job runs as the worker does, and the record says so
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from reprotrain.model import Frozen, Sparse

Mode = Literal["namespaces", "userns", "none"]
Network = Literal["none", "host"]
MODES: tuple[Mode, ...] = ("namespaces", "userns", "none")


class Isolation(Sparse):
    """How one run was confined; set by the worker from its plan, never by the job."""

    mode: Mode
    network: Network  # what the job could reach: "host" is whatever the worker's network reaches
    uid: int | None = None  # the uid the job ran as, where it is not the worker's
    note: str | None = None  # why the confinement is weaker than the strongest mode, where it is


class Plan(Frozen):
    """What the job process does to itself before any user code runs (reprotrain/job/confine.py)."""

    mode: Mode
    network: Network = "host"
    uid: int | None = None  # setuid to this (namespaces mode); None keeps the uid
    writable: list[str] = Field(default_factory=list)  # bound read-write into the read-only view
    readable: list[str] = Field(default_factory=list)  # kept visible (read-only) under hidden paths
    hidden: list[str] = Field(default_factory=list)  # covered: an empty directory, or /dev/null
    scratch: list[str] = Field(default_factory=list)  # covered by an empty directory the job may write
    note: str | None = None

    def record(self) -> Isolation:
        return Isolation(mode=self.mode, network=self.network, uid=self.uid, note=self.note)


NO_PLAN = Plan(mode="none", note="no confinement was asked for (a local run without a worker's plan)")
