"""Wire names: every name one process uses to find what another wrote, spelled once.

File names inside a job directory, artifact names, the Celery task, and the environment variables
a job process and its children read. Renaming any of them is a contract change between processes
(and, for artifacts and the task, between versions sharing a database or a broker).
"""

from __future__ import annotations

TASK = "reprotrain.run_job"  # the one Celery task; its only argument is the job id


class JobFiles:
    """Names of the files inside a job directory (a local run directory has the same layout)."""

    REQUEST = "request.json"  # supervisor → job process: the LaunchRequest
    CHILD = "child.json"  # job process → supervisor: the ChildRecord
    RESULT = "result.json"  # the stored Result
    STDOUT = "stdout.log"
    STDERR = "stderr.log"
    EVENTS = "events.jsonl"  # metrics, parameter digests and warnings, one JSON object a line
    STATE = "state/model.safetensors"  # the tracked model's final state
    BOOT = "boot"  # holds the sitecustomize that applies the policy in every Python process
    WORK = "work"  # the job's working directory; what it writes there are its outputs
    RECORDED = "recorded"  # a bisect's or pre-flight's two copies: their logs, events and outputs
    CHECKPOINTS = "checkpoints"  # <seq>/: complete checkpoints of a running job (reprotrain/job/resume.py)
    RESUME = "resume"  # the checkpoint a resumed attempt starts from, laid out as one in CHECKPOINTS


def side_stream(side: str) -> str:
    """A bisect side's recording in its job directory (and, under `_job/`, its artifact)."""
    return f"{JobFiles.RECORDED}/{side}.stream"


JOB_ARTIFACT_PREFIX = "_job/"  # artifacts of the run itself, beside the job's own output files


def job_artifact(name: str) -> str:
    """The artifact name of a job-directory file (logs, final state)."""
    return JOB_ARTIFACT_PREFIX + name


STATE_ARTIFACT = job_artifact(JobFiles.STATE)
CHECKPOINT_ARTIFACT_PREFIX = job_artifact("checkpoint/")  # + a file of the job's latest checkpoint


def output_artifact(rel: str) -> str:
    """The artifact name of a file the job wrote. A job's own `_job/…` file is stored as `./_job/…`,
    so it can never pass for one of the run's own files (its logs, its tracked state)."""
    return "./" + rel if rel.startswith(JOB_ARTIFACT_PREFIX) else rel


class JobEnv:
    """Environment variables a job process and every process it starts can read."""

    EVENTS = "REPROTRAIN_EVENTS"  # where reprotrain.report.log appends
    KNOBS = "REPROTRAIN_KNOBS"  # the resolved policy and seed, for the sitecustomize
    OUTPUT_DIR = "REPROTRAIN_OUTPUT_DIR"
    SEED = "REPROTRAIN_SEED"
    CHECKPOINT_DIR = "REPROTRAIN_CHECKPOINT_DIR"  # where reprotrain.checkpoint.checkpoint writes
    RESUME_FROM = "REPROTRAIN_RESUME_FROM"  # a resumed attempt's checkpoint (reprotrain.checkpoint.resume)
    INPUT_PREFIX = "REPROTRAIN_INPUT_"  # + the input's name, upper-cased, '-' and '.' as '_'

    @staticmethod
    def input(name: str) -> str:
        return JobEnv.INPUT_PREFIX + name.upper().replace("-", "_").replace(".", "_")


LAUNCH_HEALTH = "_health/launch.json"  # under the jobs dir: whether this worker can start jobs

BUILD_FACTS_ENV = "REPROTRAIN_BUILD_FACTS"  # where an image's build facts are (default below)
BUILD_FACTS_PATH = "/etc/reprotrain/build.json"


ENV_QUEUE_PREFIX = "env."  # + a worker's static digest: the queue only workers of that environment consume


def env_queue(static_digest: str) -> str:
    """The queue a worker of this static environment consumes besides its own (`reprotrain workers`)."""
    return ENV_QUEUE_PREFIX + static_digest.removeprefix("sha256:")[:16]
