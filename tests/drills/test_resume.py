"""A lost worker costs a job only the steps since its last checkpoint: real uvicorn, Celery workers,
Redis, SQLite and PostgreSQL, a worker SIGKILLed at a random step, the job resumed by another
worker of the same environment and identical to a straight run."""

from __future__ import annotations

import random
import signal
import time

import pytest

from tests.helpers import base_spec, wait_for

TIMEOUT = 240
PARAMS = {"samples": 128, "epochs": 3, "workers": 2, "step_sleep": 0.25}  # 12 steps, 4 an epoch


def spec(**params: object) -> dict:
    s = base_spec(name="resumable", entrypoint="reprotrain.examples.resumable_cnn:train",
                  params={**PARAMS, **params})  # fmt: skip
    s["track"] = {"checkpoint_every": 3}  # the spec's field: as ctx.checkpoint_every(3)
    return s


def steps(c, job_id: str) -> int:
    return len(c.trace(job_id)["data"])


def killed_and_resumed(stack, job_id: str) -> dict:
    """SIGKILL the worker running the job, start another, and wait for the job to succeed."""
    victim = stack.workers[-1]
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    stack.start_worker()
    done = stack.client().wait(job_id, timeout=TIMEOUT)
    assert done["status"] == "SUCCEEDED", done["error"]
    return done


@pytest.mark.parametrize("seed", [11, 12])
def test_a_job_whose_worker_is_killed_resumes_and_is_identical(stack, seed: int) -> None:
    """SIGKILL the worker at a random step after the first stored checkpoint: the next attempt,
    on a worker of the same environment, goes on from the last stored checkpoint, records the
    resume, and its verdict against a straight run of the same spec is identical."""
    c = stack.client()
    straight = c.wait(c.submit(spec(step_sleep=0))["id"], timeout=TIMEOUT)
    assert straight["status"] == "SUCCEEDED", straight["error"]
    kill_at = random.Random(seed).randint(4, 10)
    job = c.submit(spec())
    wait_for(lambda: (c.get(job["id"])["checkpoint"] or {}).get("logs", 0) >= 3, 120, "a stored checkpoint")
    wait_for(lambda: steps(c, job["id"]) >= kill_at, 120, f"step {kill_at}")
    stored = c.get(job["id"])["checkpoint"]
    done = killed_and_resumed(stack, job["id"])
    assert done["attempts"] == 2 and done["queue"].startswith("env.")
    (resume,) = done["resumes"]
    assert resume["attempt"] == 2 and resume["restored"] is True
    assert (
        resume["logs"] >= stored["logs"] and resume["logs"] % 3 == 0 and resume["worker"] != stored["worker"]
    )
    verdict = c.compare(straight["id"], done["id"])
    assert verdict["verdict"] == "identical", verdict
    names = {a["name"] for a in c.artifacts(done["id"])["data"]}
    assert "outputs/epoch-2.pt" in names and not any(n.startswith("_job/checkpoint/") for n in names)


def test_a_worker_killed_while_writing_a_checkpoint_resumes_from_the_one_before(stack) -> None:
    """SIGKILL the worker while the job writes a (large) checkpoint whose predecessor is stored:
    the attempt after goes on from that predecessor, and is still identical to a straight run."""
    from pathlib import Path

    c = stack.client()
    big = spec(step_sleep=0.3, state_mb=200)
    straight = c.wait(c.submit({**big, "params": {**big["params"], "step_sleep": 0}})["id"], timeout=TIMEOUT)
    assert straight["status"] == "SUCCEEDED", straight["error"]
    job = c.submit(big)
    root = Path(stack.env["REPROTRAIN_DATA_DIR"]) / "jobs" / job["id"] / "attempt-1" / "checkpoints"

    def partial() -> int | None:  # the checkpoint being written, if one is
        return next((int(p.name.split("-")[1]) for p in root.glob(".partial-*")), None)

    wait_for(lambda: (c.get(job["id"])["checkpoint"] or {}).get("seq"), 120, "a stored checkpoint")
    end = time.monotonic() + 120  # once one is stored, any being written comes after it
    while (cut := partial()) is None and time.monotonic() < end:
        time.sleep(0.002)  # a look at the disk, not the API: a write is brief
    assert cut is not None, "no checkpoint written after a stored one"
    victim = stack.workers[-1]
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    stored = c.get(job["id"])["checkpoint"]["seq"]  # what the lost worker had stored
    assert stored < cut
    stack.start_worker()
    done = c.wait(job["id"], timeout=TIMEOUT)
    assert done["status"] == "SUCCEEDED", done["error"]
    (resume,) = done["resumes"]
    assert resume["restored"] is True and resume["checkpoint"] == stored  # not the one cut short
    assert c.compare(straight["id"], done["id"])["verdict"] == "identical"
