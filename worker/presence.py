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
from reprotrain.settings import Settings
from reprotrain.store import Store
from reprotrain.wire import env_queue

log = logging.getLogger("reprotrain.worker")
EVERY_S = 10.0  # a worker not seen for PRESENCE_TTL_S (service) is listed as not alive


def worker_id() -> str:
    """The worker's name: also the lease owner of every job it claims."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def own_queue(runner: Any) -> str | None:
    """The queue of this worker's static environment, once its fork server has read it."""
    static = getattr(runner, "static", None)
    return env_queue(env_digest(static.model_dump(mode="json"))) if static is not None else None


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
        static = getattr(runner, "static", None)
        own = own_queue(runner)
        return {
            "host": socket.gethostname(),
            "queues": [*self.settings.queues, *([own] if own else [])],
            "version": __version__,
            "isolation": runner.isolation.mode if runner is not None else None,
            "static_digest": env_digest(static.model_dump(mode="json")) if static is not None else None,
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
