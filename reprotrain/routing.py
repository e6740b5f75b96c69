"""Where a run's re-run (or a bisect side) must run: a worker of the environment it ran in.

A worker consumes, besides its own queues, the queue of each environment it offers
(`wire.env_queue`): its static environment (what its fork server reads before any job: Python,
torch, BLAS, CPU kernels, image), and, on a host with GPUs, that environment together with its
CUDA facts (GPU model, driver, CUDA and cuDNN versions), read by the same collector a job uses. A
run is routed by the same digest of its own fingerprint: the static part for a CPU run, the static
part and the CUDA part for a run that used CUDA. So a re-run lands only where the original's
environment is, and nothing the spec says can change where that is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from reprotrain.errors import NoMatchingWorker
from reprotrain.fingerprint import StaticFacts, diff, env_digest
from reprotrain.wire import env_queue

EnvChoice = Literal["same", "any"]
SHOWN = 4  # differences named per live environment in a refusal


def environment(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The part of a fingerprint that picks a worker: its static facts, plus its CUDA facts when
    the run used CUDA."""
    env = {k: fingerprint[k] for k in StaticFacts.model_fields if k in fingerprint}
    cuda = fingerprint.get("cuda")
    if isinstance(cuda, dict) and cuda.get("used"):
        env["cuda"] = cuda
    return env


def run_queue(fingerprint: dict[str, Any] | None) -> str | None:
    """The environment queue of a stored run (None: it recorded no fingerprint)."""
    return env_queue(env_digest(environment(fingerprint))) if fingerprint else None


def worker_queues(static: dict[str, Any] | None, cuda: dict[str, Any] | None) -> list[str]:
    """The environment queues a worker consumes: its static environment's and, with GPUs, that
    environment with its CUDA facts."""
    if static is None:
        return []
    queues = [env_queue(env_digest(static))]
    if cuda and cuda.get("used") and cuda.get("gpus"):
        queues.append(env_queue(env_digest({**static, "cuda": cuda})))
    return queues


@dataclass(frozen=True)
class LiveWorker:
    """What routing needs of a worker that is alive."""

    id: str
    queues: list[str]
    static: dict[str, Any] | None
    cuda: dict[str, Any] | None


def rerun_queue(
    fingerprint: dict[str, Any] | None, spec_queue: str, live: Iterable[LiveWorker], env: EnvChoice = "same"
) -> str:
    """The queue a re-run goes to. `same`: the original's environment queue, NoMatchingWorker
    when no live worker has it (naming each live environment and how it differs); `any`, or an
    original that recorded no environment: the spec's queue."""
    queue = run_queue(fingerprint)
    if env == "any" or queue is None:
        return spec_queue
    live = list(live)
    if any(queue in w.queues for w in live):
        return queue
    raise NoMatchingWorker(refusal("the re-run", queue, fingerprint or {}, live))


def refusal(what: str, queue: str, fingerprint: dict[str, Any], live: list[LiveWorker]) -> str:
    """Why `what` has nowhere to run: the environment it needs and each live one, with what differs."""
    wanted = environment(fingerprint)
    offered: dict[str, tuple[int, dict[str, Any]]] = {}
    for w in live:
        if w.static is None:
            continue
        env = dict(w.static) | ({"cuda": w.cuda} if "cuda" in wanted and w.cuda else {})
        key = worker_queues(w.static, w.cuda)[-1 if "cuda" in wanted else 0]
        count, _ = offered.get(key, (0, env))
        offered[key] = (count + 1, env)
    parts = []
    for key, (count, env) in sorted(offered.items()):
        rows = [r for r in diff(wanted, env) if r["likely_cause"]] or diff(wanted, env)
        shown = "; ".join(f"{r['label']} ({r['key']}) {r['a']} → {r['b']}" for r in rows[:SHOWN])
        more = f"; and {len(rows) - SHOWN} more" if len(rows) > SHOWN else ""
        parts.append(f"{key} ({count} worker{'s' if count > 1 else ''}): {shown or 'no difference'}{more}")
    envs = "\n  ".join(parts) or "none"
    return (
        f"no live worker has the environment {what} must run in ({queue}); the live environments, "
        f"and how each differs from it:\n  {envs}\nStart a worker of that environment "
        "(`reprotrain workers` lists them), or re-run with --env any (POST …/rerun?env=any): the "
        "verdict then says it compares two environments"
    )
