"""What the routes do, as plain functions over the store and the queue."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path, PurePosixPath
from typing import Any

from reprotrain.errors import NotFound, RequestInvalid, SpecInvalid
from reprotrain.spec import JobSpec, parse_spec
from reprotrain.status import Status
from reprotrain.store import Store
from reprotrain.store.tables import JobRow


def validate(store: Store, body: Any, input_roots: list[Path]) -> JobSpec:
    """A submitted body as a spec whose bundle, if it names one, is stored here, and whose inputs
    name paths under an input root. The paths are checked as text, never looked up: whatever the
    reason a path is refused, the answer is the same, so it says nothing of what exists."""
    spec = parse_spec(body)
    for name, item in spec.inputs.items():
        path = PurePosixPath(item.path)
        if (
            not path.is_absolute()
            or ".." in path.parts
            or not any(path.is_relative_to(r) for r in input_roots)
        ):
            raise SpecInvalid(
                "must be an absolute path under an input root (REPROTRAIN_INPUT_ROOTS)",
                field=f"inputs.{name}.path",
            )
    if spec.bundle is not None and not store.has_bundle(spec.bundle):
        raise NotFound(f"unknown bundle {spec.bundle}; upload it with POST /v1/bundles first", field="bundle")
    return spec


def live_trace(store: Store, row: JobRow) -> list[dict[str, Any]]:
    """The stored trace of a finished job, or what the worker has shipped so far (`row` may be
    light: its result is not read from it)."""
    return live_progress(store, row)[0]


def live_progress(store: Store, row: JobRow) -> tuple[list[dict[str, Any]], int | None]:
    """The trace as `live_trace` gives it, and the step count a running job declared
    (`ctx.total_steps`, `log(step, total=N)`), if any: the shipped events read once."""
    if Status(row.status).is_final:
        return store.trace(row.id), None
    trace, total = [], None
    for line in store.read_log(row.id, "events").decode("utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("kind") == "metric":
            trace.append(event)
        elif event.get("kind") == "progress" and isinstance(event.get("total"), int):
            total = event["total"]
    return trace, total


VERDICTS = ("identical", "results_identical", "metrics_identical", "diverged", "incomparable", "none")


def parse_verdict_filter(values: list[str] | None) -> list[str] | None:
    """Verdict kinds, repeated or comma-separated; `none` matches jobs without a verdict."""
    out = [v.strip().lower() for value in values or () for v in value.split(",") if v.strip()]
    for v in out:
        if v not in VERDICTS:
            raise RequestInvalid(f"unknown verdict {v!r}; one of {', '.join(VERDICTS)}", field="verdict")
    return out or None


MAX_PARAM_FILTERS = 8
_PARAM_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}(\.[A-Za-z_][A-Za-z0-9_-]{0,63}){0,7}$")


def parse_param_filters(items: list[tuple[str, str]]) -> tuple[tuple[str, Any], ...]:
    """`param.<path>=<value>` query items: the value read as JSON where it is (0.1, true, 3), as
    text otherwise ("adam")."""
    out = []
    for key, raw in items:
        if not key.startswith("param."):
            continue
        path = key.removeprefix("param.")
        if not _PARAM_PATH.match(path):
            raise RequestInvalid("a param filter is param.<name>[.<name>…]=<value>", field=key)
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if not isinstance(value, str | int | float | bool) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            value = raw  # a list, an object, null or NaN compare as the text given
        out.append((path, value))
    if len(out) > MAX_PARAM_FILTERS:
        raise RequestInvalid(f"at most {MAX_PARAM_FILTERS} param filters", field="param")
    return tuple(out)


def parse_status_filter(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = []
    for v in values:
        for s in v.split(","):
            s = s.strip().upper()
            if s not in Status.__members__:
                allowed = ", ".join(Status.__members__)
                raise RequestInvalid(f"unknown status {s!r}; one of {allowed}", field="status")
            out.append(s)
    return out
