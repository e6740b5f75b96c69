"""A worker's presence in the store: who it is, what it consumes and runs, and when it last said so
(`GET /v1/workers`, `reprotrain workers`, the `reprotrain_workers_live` metric)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from reprotrain import __version__
from reprotrain.fingerprint import env_digest
from reprotrain.routing import worker_queues
from reprotrain.settings import Settings
from reprotrain.store import Store

log = logging.getLogger("reprotrain.worker")
EVERY_S = 10.0  # a worker not seen for PRESENCE_TTL_S (service) is listed as not alive


def worker_id() -> str:
    """The worker's name: also the lease owner of every job it claims."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def offered(runner: Any) -> dict[str, Any] | None:
    """The environment this worker offers, once its fork server has read it: its static facts and,
    on a host with GPUs, the CUDA facts a job would record (`reprotrain.routing`)."""
    static = getattr(runner, "static", None)
    if static is None:
        return None
    return {"static": static.model_dump(mode="json"), "cuda": getattr(runner, "cuda", None)}


def own_queues(runner: Any) -> list[str]:
    """The queues of this worker's environments (static; static with its GPUs)."""
    facts = offered(runner)
    return worker_queues(facts["static"], facts["cuda"]) if facts else []


class Presence(threading.Thread):
    """Says every EVERY_S that this worker is alive; once its fork server has started, with its
    isolation mode and the digest of its static environment. Its own store connection."""

    def __init__(self, settings: Settings, owner: str, runtime: Callable[[], Any]) -> None:
        super().__init__(name="reprotrain-presence", daemon=True)
        self.settings, self.owner, self.runtime = settings, owner, runtime
        self.store = Store(settings.db_url)
        self.stopped = threading.Event()

    def facts(self) -> dict[str, Any]:
        runner = getattr(self.runtime(), "runner", None)
        facts = offered(runner)
        return {
            "host": socket.gethostname(),
            "queues": [*self.settings.queues, *own_queues(runner)],
            "version": __version__,
            "isolation": runner.isolation.mode if runner is not None else None,
            "static_digest": env_digest(facts["static"]) if facts else None,
            "facts": facts,
        }

    def run(self) -> None:
        while True:
            try:
                self.store.worker_seen(self.owner, **self.facts())
            except Exception:  # the database away: said again at the next beat
                log.warning("presence of %s not recorded", self.owner, exc_info=True)
            if self.stopped.wait(EVERY_S):
                return

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)
        try:
            self.store.worker_gone(self.owner)
        except Exception:
            log.warning("could not remove %s from the workers", self.owner, exc_info=True)
        self.store.close()
