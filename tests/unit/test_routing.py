"""Where a re-run goes (reprotrain.routing): the queue of the original's environment, or a refusal."""

from __future__ import annotations

import pytest

from reprotrain.compare import compare
from reprotrain.errors import NoMatchingWorker
from reprotrain.fingerprint import StaticFacts, static_digest
from reprotrain.routing import LiveWorker, environment, rerun_queue, run_queue, worker_queues
from reprotrain.wire import env_queue
from tests.helpers import fingerprint_dict
from tests.unit.test_compare import result

H200 = {"name": "NVIDIA H200", "capability": "9.0", "memory": 150_000_000_000, "uuid": "GPU-1"}
CUDA = {"used": True, "runtime": "12.8", "cudnn": 91000, "nccl": "2.26.2", "driver": "570.1", "gpus": [H200]}


def static(fp: dict) -> dict:
    return {k: fp[k] for k in StaticFacts.model_fields}


def worker(fp: dict, cuda: dict | None = None, id: str = "w") -> LiveWorker:
    return LiveWorker(
        id=id, queues=["default", *worker_queues(static(fp), cuda)], static=static(fp), cuda=cuda
    )


def test_a_cpu_run_goes_to_its_static_environment_queue() -> None:
    """A CPU run's queue is its static environment's, the one every worker of it consumes first."""
    fp = fingerprint_dict()
    assert run_queue(fp) == env_queue(static_digest(fp)) == worker_queues(static(fp), None)[0]
    assert run_queue(fingerprint_dict(host={"hostname": "other", "pid": 1})) == run_queue(fp)
    assert run_queue(None) is None


def test_a_cuda_run_goes_only_to_a_worker_with_its_gpus() -> None:
    """A CUDA run is routed by its GPU model and driver too; a GPU's serial number does not count."""
    fp = fingerprint_dict(cuda=CUDA, device="cuda")
    assert "cuda" in environment(fp) and "cuda" not in environment(fingerprint_dict())
    queues = worker_queues(static(fp), CUDA)
    assert len(queues) == 2 and run_queue(fp) == queues[1] != queues[0]
    other_card = {**CUDA, "gpus": [{**H200, "uuid": "GPU-2"}]}
    assert worker_queues(static(fp), other_card)[1] == run_queue(fp)
    other_model = {**CUDA, "gpus": [{**H200, "name": "NVIDIA H100", "capability": "9.0"}]}
    assert worker_queues(static(fp), other_model)[1] != run_queue(fp)
    assert worker_queues(static(fp), {**CUDA, "driver": "575.0"})[1] != run_queue(fp)


def test_a_rerun_goes_to_a_live_worker_of_its_environment() -> None:
    """With a live worker of the original's environment the re-run goes to that environment's queue."""
    fp = fingerprint_dict()
    assert rerun_queue(fp, "default", [worker(fp)]) == run_queue(fp)
    assert rerun_queue(fp, "default", [worker(fp)], "any") == "default"
    assert rerun_queue(None, "gpu", []) == "gpu"  # no environment recorded: nothing to keep


def test_no_live_worker_of_the_environment_is_refused_with_what_differs() -> None:
    """The refusal names the environment needed and each live one, with its differences."""
    fp = fingerprint_dict(cpu={"model": "Test CPU", "flags": "avx2", "count": 2, "capability": "AVX2"})
    scalar = fingerprint_dict(cpu={"model": "Test CPU", "flags": "avx2", "count": 2, "capability": "DEFAULT"})
    newer = fingerprint_dict(
        cpu=fp["cpu"], torch={"version": "2.14.0", "git": "def", "cuda_build": None, "debug": False}
    )
    live = [worker(scalar, id="w1"), worker(scalar, id="w2"), worker(newer, id="w3")]
    with pytest.raises(NoMatchingWorker) as e:
        rerun_queue(fp, "default", live)
    msg = e.value.message
    assert run_queue(fp) in msg
    assert f"{run_queue(scalar)} (2 workers): CPU kernel set (ATen) (cpu.capability) AVX2 → DEFAULT" in msg
    assert f"{run_queue(newer)} (1 worker): torch version (torch.git) abc → def" in msg
    assert "torch version (torch.version) 2.13.0 → 2.14.0" in msg
    assert "--env any" in msg
    assert rerun_queue(fp, "default", live, "any") == "default"


def test_a_cuda_run_is_refused_by_a_worker_without_its_gpu() -> None:
    """A worker of the same static environment but another GPU is not where a CUDA re-run goes."""
    fp = fingerprint_dict(cuda=CUDA, device="cuda")
    h100 = {**CUDA, "gpus": [{**H200, "name": "NVIDIA H100", "memory": 80_000_000_000}]}
    with pytest.raises(NoMatchingWorker) as e:
        rerun_queue(fp, "default", [worker(fp, h100)])
    assert "GPU model (cuda.gpus.0.name) NVIDIA H200 → NVIDIA H100" in e.value.message
    assert rerun_queue(fp, "default", [worker(fp, CUDA)]) == run_queue(fp)


def test_a_verdict_across_environments_says_so() -> None:
    """Two runs of different environments get a verdict marked cross-environment, with a note."""
    a = result(job_id="a")
    knob = {**fingerprint_dict()["cpu"], "capability": "DEFAULT"}
    v = compare(a, result(job_id="b", fingerprint=fingerprint_dict(cpu=knob)))
    assert v.cross_environment is True and any("different environments" in n for n in v.notes or [])
    same = compare(a, result(job_id="c", fingerprint=fingerprint_dict(host={"hostname": "h2", "pid": 7})))
    assert same.cross_environment is None and "cross_environment" not in same.model_dump(exclude_none=True)
