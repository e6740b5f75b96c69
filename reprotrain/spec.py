"""The job spec (v1): a frozen, canonical description of one training job, and its digest."""

from __future__ import annotations

import json
import re
import sys
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from reprotrain.errors import SpecInvalid
from reprotrain.hashing import canonical_json, digest_bytes
from reprotrain.model import Frozen

MAX_SEED = 2**63 - 1
POLICIES = ("off", "seeded", "strict", "warn")
_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")
_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
MAX_TAGS = 16
Tag = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:=/+-]{1,64}$")]  # no comma: stored comma-joined

Policy = Literal["off", "seeded", "strict", "warn"]
StrictBool = Annotated[bool, Field(strict=True)]


class InputSpec(Frozen):
    """A named input: a file or directory the worker can read."""

    path: str = Field(min_length=1, description="a path the worker sees (mounted volume)")


class DeterminismSpec(Frozen):
    """The policy, and optional overrides of single knobs (None: the policy decides)."""

    policy: Policy = "strict"
    cudnn_benchmark: StrictBool | None = None
    allow_tf32: StrictBool | None = None
    num_threads: Annotated[int, Field(strict=True, ge=1, le=1024)] | None = None
    fill_uninitialized_memory: StrictBool | None = None
    sdpa_math_only: StrictBool | None = None
    cublas_workspace_config: Literal[":4096:8", ":16:8"] | None = None
    mkl_cbwr: Annotated[str, Field(pattern=r"^[A-Z0-9_,]{1,32}$")] | None = None
    preflight: Annotated[int, Field(strict=True, ge=1, le=100_000)] | None = Field(
        None,
        description="before the run, two copies run this many logged steps with op recording and must "
        "agree op for op; else the job fails 'nondeterministic' with the first differing op",
    )


class TrackSpec(Frozen):
    digest_every: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] = 10
    # function mode: checkpoint after every N-th log, as ctx.checkpoint_every(N) (README, "Checkpoints")
    checkpoint_every: Annotated[int | None, Field(strict=True, ge=1, le=1_000_000)] = None


Glob = Annotated[str, Field(min_length=1, max_length=300)]
EnvValue = Annotated[str, Field(max_length=4096, pattern=r"^[^\x00]*$")]


class CompareSpec(Frozen):
    """How this job's outputs are compared (README, "Outputs by role")."""

    outputs: list[Glob] = Field(default_factory=list, description="files that are results, always")
    volatile: list[Glob] = Field(default_factory=list, description="files whose differences are incidental")
    noise: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(
        default_factory=list,
        description="regular expressions: line parts masked before stdout/stderr compare",
    )

    @field_validator("noise")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"not a regular expression: {pattern!r} ({e})") from None
        return v


class BisectSpec(Frozen):
    """What a bisect job does instead of training: run two copies up to `until_step`, recorded."""

    a: Annotated[str, Field(max_length=64)] | None = Field(None, description="the job whose spec copy a runs")
    b: Annotated[str, Field(max_length=64)] | None = Field(None, description="the job it is bisected against")
    until_step: Annotated[int, Field(strict=True, ge=0)] | None = Field(
        description="the first differing step; null: the whole run (runs that log no steps)"
    )
    against: JobSpec | None = Field(None, description="copy b's spec, when it is not this one")
    side: Literal["a", "b"] | None = Field(
        None,
        description="a bisect across environments: this job records one side alone, on a worker of "
        "that side's environment; side b's job compares the two recordings",
    )
    partner: Annotated[str, Field(max_length=64)] | None = Field(None, description="side b's: side a's job")

    @model_validator(mode="after")
    def _sides(self) -> BisectSpec:
        if self.side is not None and self.against is not None:
            raise ValueError("a side of a cross-environment bisect runs its own spec; no 'against'")
        if (self.side == "b") != (self.partner is not None):
            raise ValueError("side b of a cross-environment bisect, and only it, names its 'partner'")
        return self


class JobSpec(Frozen):
    """Job spec v1. Exactly one of `entrypoint` (function mode) or `command` (script mode)."""

    name: Annotated[str, Field(min_length=1, max_length=200)] = "job"
    project: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:/+-]{1,100}$")] | None = Field(
        None, description="groups jobs (the runs table and `ls` filter on it)"
    )
    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS)] = Field(
        default_factory=list, description="labels to find the job by (the runs table filters on them)"
    )
    entrypoint: str | None = None
    command: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = None
    bundle: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[Annotated[str, Field(pattern=_NAME)], InputSpec] = Field(default_factory=dict)
    seed: Annotated[int, Field(strict=True, ge=0, le=MAX_SEED)] | None = None
    determinism: DeterminismSpec = Field(default_factory=DeterminismSpec)
    device: Literal["cpu", "cuda", "auto"] = "auto"
    queue: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "default"
    timeout_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] = 3600
    track: TrackSpec = Field(default_factory=TrackSpec)
    compare: CompareSpec | None = None
    network: Literal["none", "host"] = Field(
        "none", description="none: loopback only, where the worker can confine jobs; host: the worker's"
    )
    env: (
        Annotated[
            dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")], EnvValue],
            Field(max_length=64),
        ]
        | None
    ) = Field(None, description="variables the job's processes get (REPROTRAIN_* is reserved)")

    bisect: BisectSpec | None = Field(None, description="set on a bisect job (POST /v1/jobs/{a}/bisect/{b})")

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_shape(cls, v: str | None) -> str | None:
        if v is not None and not _ENTRYPOINT.match(v):
            raise ValueError("must look like 'package.module:function'")
        return v

    @field_validator("tags")
    @classmethod
    def _tags_once(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))  # a tag given twice is one tag

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        reserved = sorted(k for k in v or {} if k.startswith("REPROTRAIN_"))
        if reserved:
            raise ValueError(f"REPROTRAIN_* names are reprotrain's own: {', '.join(reserved)}")
        return v

    @field_validator("params")
    @classmethod
    def _params_json(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            canonical_json(v)
        except (TypeError, ValueError) as e:
            raise ValueError(f"must be plain JSON (no NaN, no infinities): {e}") from e
        return v

    @model_validator(mode="after")
    def _mode_and_seed(self) -> JobSpec:
        if (self.entrypoint is None) == (self.command is None):
            which = "both are" if self.entrypoint else "neither is"
            raise SpecInvalid(
                f"give exactly one of 'entrypoint' or 'command' ({which} set)",
                field="entrypoint",
            )
        if self.command is not None and (self.bisect is not None or self.determinism.preflight):
            what = "bisect" if self.bisect is not None else "determinism.preflight"
            if not inline_python(self.command):
                raise SpecInvalid(
                    f"{what} records the ops of Python run in the job process: a script-mode job "
                    "needs a command 'python SCRIPT.py ...' or 'python -m MODULE ...' (not a shell "
                    "or another program that starts Python)",
                    field="bisect" if self.bisect is not None else "determinism.preflight",
                )
        if self.seed is None and self.determinism.policy != "off":
            policy = self.determinism.policy
            default = " (the default)" if "policy" not in self.determinism.model_fields_set else ""
            raise SpecInvalid(
                f"required for determinism policy '{policy}'{default}: give a seed, "
                "or set determinism: {policy: off} for a run not meant to reproduce",
                field="seed",
            )
        return self

    @property
    def mode(self) -> Literal["function", "script"]:
        return "function" if self.entrypoint else "script"

    def canonical(self) -> dict[str, Any]:
        """The spec with every default filled in: what the digest is taken of. A spec without a
        `compare` section leaves it out, so its digest is the one it had before the section existed."""
        data = self.model_dump(mode="json")
        if data["determinism"]["preflight"] is None:  # likewise
            del data["determinism"]["preflight"]
        if data["track"]["checkpoint_every"] is None:  # likewise
            del data["track"]["checkpoint_every"]
        if self.bisect is None:
            del data["bisect"]
        else:
            for key in ("against", "side", "partner"):  # unset: the digest it had before the field
                if data["bisect"][key] is None:
                    del data["bisect"][key]
            if self.bisect.against is not None:
                data["bisect"]["against"] = self.bisect.against.canonical()
        for optional in ("compare", "env", "project"):  # absent: the digest it had before the field existed
            if data[optional] is None:
                del data[optional]
        if data["network"] == "none":  # the default: the digest it had before the field existed
            del data["network"]
        if not data["tags"]:  # likewise
            del data["tags"]
        return data

    @cached_property  # the spec is frozen; a submit reads the digest more than once
    def digest(self) -> str:
        return digest_bytes(canonical_json(self.canonical()))


PYTHON_NAMES = frozenset({"python", "python3", f"python3.{sys.version_info.minor}"})


def inline_python(argv: list[str]) -> bool:
    """`python X.py ...` or `python -m M ...`: run in the job process itself (README, "Script mode")."""
    return len(argv) > 1 and argv[0] in PYTHON_NAMES and (argv[1].endswith(".py") or argv[1] == "-m")


MAX_DEPTH = 32  # nesting of mappings and lists in a spec (params included); README, "Limits"


def check_plain(data: Any) -> None:
    """Every string storable as it is (no NUL, no lone surrogate: PostgreSQL's JSON refuses both)
    and nothing nested deeper than MAX_DEPTH; SpecInvalid naming the first place that is not.
    Iterative, so no depth can exhaust the stack before the limit says no."""
    todo: list[tuple[Any, str, int]] = [(data, "", 0)]
    while todo:
        value, where, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise SpecInvalid(f"nested deeper than {MAX_DEPTH} levels", field=where or None)
        if isinstance(value, dict):
            for k, v in value.items():
                _check_text(str(k), f"{where}.{k}" if where else str(k), "name")
                todo.append((v, f"{where}.{k}" if where else str(k), depth + 1))
        elif isinstance(value, list):
            todo.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value))
        elif isinstance(value, str):
            _check_text(value, where, "value")


def _check_text(text: str, where: str, what: str) -> None:
    if "\x00" in text:
        raise SpecInvalid(f"the {what} holds a NUL character", field=_printable(where))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        why = f"the {what} is not valid Unicode (a lone surrogate)"
        raise SpecInvalid(why, field=_printable(where)) from None


def _printable(where: str) -> str:
    return where.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\0")[:200]


def parse_spec(data: Any) -> JobSpec:
    """Validate a decoded spec; any problem becomes SpecInvalid naming the first bad field."""
    if not isinstance(data, dict):
        raise SpecInvalid(f"a job spec must be a mapping, got {type(data).__name__}")
    check_plain(data)
    try:
        return JobSpec.model_validate(data)
    except SpecInvalid:
        raise
    except ValidationError as e:
        raise _spec_error(e) from None


def _spec_error(e: ValidationError) -> SpecInvalid:
    errors = e.errors()
    for err in errors:  # model validators raise SpecInvalid wrapped by pydantic
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, SpecInvalid):
            return inner
    first = errors[0]
    field = ".".join(str(p) for p in first["loc"]) or None
    msg = _describe(first)
    if len(errors) > 1:
        msg += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return SpecInvalid(msg, field=field)


def _describe(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if "input" in err and err["type"] not in ("missing",):
        shown = json.dumps(err["input"], default=str)
        if len(shown) <= 60:
            msg += f" (got {shown})"
    return msg


def load_spec(path: str | Path) -> JobSpec:
    """Read a spec from a YAML or JSON file (JSON is YAML, so one parser serves both)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecInvalid(f"cannot read spec file {p}: {e.strerror}") from e
    return parse_spec(loads_spec(text, source=str(p)))


def loads_spec(text: str, *, source: str = "spec") -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise SpecInvalid(f"{source} is not valid YAML/JSON{at}") from e
