"""The environment fingerprint: its model, its digest, and a diff that labels each difference.

Each field carries its `Label` where it is declared: what a person calls a difference there, whether
it likely changes result bits, and whether it counts in `env_digest` (what names a machine or a
moment without changing bits does not: hostname, pid, GPU UUIDs, the CPU count, an image's build
date). The job side fills the model (reprotrain/job/fingerprint.py), the image build writes its
`ImageFacts` (deploy/build_facts.py), and the verdict reads the diff; the keys exist only here.
"""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reprotrain.hashing import digest_json
from reprotrain.model import Stored


@dataclass(frozen=True)
class Label:
    """How a difference at a field (and below it, unless a deeper field says otherwise) reads."""

    name: str
    cause: bool = True  # likely to change result bits
    digest: bool = True  # counted in env_digest (False here holds for everything below)


class _Facts(Stored):
    pass


class PythonFacts(_Facts):
    version: str
    implementation: str


class OsFacts(_Facts):
    system: str
    release: str
    machine: str
    libc: str


class CpuFacts(_Facts):
    model: Annotated[str, Label("CPU model")]
    flags: Annotated[str, Label("CPU instruction set")]
    count: Annotated[int | None, Label("CPU count", cause=False, digest=False)]
    capability: Annotated[str | None, Label("CPU kernel set (ATen)")] = Field(
        None,
        description="the vectorised kernels torch dispatches to (DEFAULT, AVX2, AVX512); "
        "ATEN_CPU_CAPABILITY or the CPU picks it, and it changes result bits",
    )


class TorchFacts(_Facts):
    version: str
    git: str | None
    cuda_build: str | None
    debug: bool | None


class NumpyFacts(_Facts):
    version: str


class BlasFacts(_Facts):
    numpy: str | None
    torch: str | None


class Packages(_Facts):
    digest: Annotated[str, Label("installed packages", cause=False)]  # the list names which one
    list: Annotated[dict[str, str], Label("installed package")]


class OsPackages(_Facts):
    count: int
    digest: str


class ImageFacts(_Facts):
    """What an image build records of itself (deploy/build_facts.py writes it at build time)."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True, validate_by_alias=True)

    schema_: int = Field(alias="schema")
    target: str
    base_image: str
    base_image_digest: str | None
    python_image: str | None
    python_image_digest: str | None
    requirements_lock_sha256: str | None
    locks: dict[str, str]
    torch: str | None
    torch_index: str | None
    reprotrain: str | None
    os_packages: OsPackages | None
    vcs_ref: str | None
    # two builds from the same locks and base differ only here: not a cause
    build_date: Annotated[str, Label("image build date", cause=False, digest=False)]
    build_date_source: Annotated[str, Label("image build date", cause=False, digest=False)]


class GpuFacts(_Facts):
    name: str
    capability: str
    memory: int
    uuid: Annotated[str, Label("GPU identity", cause=False, digest=False)]


class CudaUnused(_Facts):
    used: Literal[False] = False


class CudaFacts(_Facts):
    used: Literal[True] = True
    runtime: Annotated[str | None, Label("CUDA version")]
    cudnn: Annotated[int | None, Label("cuDNN version")]
    nccl: Annotated[str | None, Label("NCCL version")]
    driver: Annotated[str | None, Label("GPU driver version")]
    gpus: Annotated[list[GpuFacts], Label("GPU model")]


class EnvKnobs(_Facts):
    """Each determinism knob as the job process read it back after applying its policy."""

    deterministic_algorithms: Literal["off", "warn", "error"]
    cudnn_benchmark: bool
    cudnn_deterministic: bool
    num_threads: Annotated[int, Label("thread count")]
    allow_tf32: dict[str, bool]  # matmul, cudnn
    float32_matmul_precision: str
    fill_uninitialized_memory: bool
    mkldnn_deterministic: bool
    sdpa_math_only: bool
    cublas_workspace_config: str | None
    python_hash_seed: str | None
    source_date_epoch: str | None
    mkl_cbwr: str | None
    mkl_cbwr_branch: str | None = None  # recorded since MKL's own reading was added


class EffectiveKnobs(EnvKnobs):
    """The knobs plus this process's torch seed: recorded with the result, not part of the
    environment (a job's seed is in its spec)."""

    torch_initial_seed: int


class HostFacts(_Facts):
    hostname: str
    pid: int


class StaticFacts(_Facts):
    """What does not change while a worker runs: read once, before the fork server forks."""

    python: Annotated[PythonFacts, Label("Python version")]
    os: Annotated[OsFacts, Label("operating system", cause=False)]
    cpu: CpuFacts
    torch: Annotated[TorchFacts, Label("torch version")]
    numpy: Annotated[NumpyFacts, Label("numpy version")]
    blas: Annotated[BlasFacts, Label("BLAS library")]
    packages: Packages
    image: Annotated[ImageFacts | None, Label("container image")]


class Fingerprint(StaticFacts):
    """The whole environment of one job process, after its policy was applied.

    The environment only: the job's own spec, code bundle and input data are compared from the
    result (`Result.spec`, `Result.inputs`), so two jobs on one worker share an `env_digest`."""

    cuda: Annotated[CudaUnused | CudaFacts, Field(discriminator="used"), Label("CUDA use")]
    device: Annotated[Literal["cpu", "cuda"], Label("device type")]
    determinism: Annotated[EnvKnobs, Label("determinism setting")]
    env: Annotated[dict[str, str | None], Label("environment variable")]
    host: Annotated[HostFacts, Label("host identity", cause=False, digest=False)]


OTHER = Label("other", cause=False)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; lists of dicts are indexed (gpus.0.name)."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, list) and any(isinstance(x, dict) for x in obj):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = obj
    return out


@functools.lru_cache(maxsize=4096)  # keys repeat from job to job; a fingerprint has a few hundred
def describe(key: str) -> Label:
    """The label of a flattened fingerprint key: the deepest declared one on its path."""
    found, digest, models = OTHER, True, [Fingerprint]
    for part in key.split("."):
        if part.isdigit():  # an index into a list of models
            continue
        field = next((_fields(m)[part] for m in models if part in _fields(m)), None)
        if field is None:
            break
        label = next((x for x in field.metadata if isinstance(x, Label)), None)
        if label is not None:
            found, digest = label, digest and label.digest
        models = _models_in(field.annotation)
    return Label(found.name, found.cause, digest)


@functools.cache
def _fields(model: type[BaseModel]) -> dict[str, Any]:
    return {(f.alias or name): f for name, f in model.model_fields.items()} | dict(model.model_fields)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models a field's value can be: unwraps Optional, unions and lists."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, typing.Annotated):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _as_dict(fingerprint: Fingerprint | dict[str, Any] | None) -> dict[str, Any]:
    if fingerprint is None:
        return {}
    return fingerprint if isinstance(fingerprint, dict) else fingerprint.model_dump(mode="json")


def env_digest(fingerprint: Fingerprint | dict[str, Any]) -> str:
    """Digest of the reproducibility-relevant part of a fingerprint."""
    flat = flatten(_as_dict(fingerprint))
    return digest_json({k: v for k, v in flat.items() if describe(k).digest})


def static_digest(fingerprint: Fingerprint | dict[str, Any]) -> str:
    """Digest of the static part of a fingerprint: what a worker has before it runs any job (its
    presence reports it; its environment queue is named by it, `wire.env_queue`)."""
    data = _as_dict(fingerprint)
    return env_digest({k: data[k] for k in StaticFacts.model_fields if k in data})


def label(key: str) -> tuple[str, bool]:
    d = describe(key)
    return d.name, d.cause


def diff(
    a: Fingerprint | dict[str, Any] | None, b: Fingerprint | dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Every differing key, likely causes first, each with its label."""
    fa, fb = flatten(_as_dict(a)), flatten(_as_dict(b))
    rows = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key), fb.get(key)
        if va != vb:
            name, likely = label(key)
            rows.append({"key": key, "a": va, "b": vb, "label": name, "likely_cause": likely})
    rows.sort(key=lambda r: not r["likely_cause"])
    return rows
