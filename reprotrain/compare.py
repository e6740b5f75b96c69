"""Comparing two results: did a re-run reproduce its original, and if not, where and why not.

Builds a `Verdict` (reprotrain/verdict.py) from two `Result`s and, where given, their files
(`RunFiles`: the final state for the size of the first differing tensor, the logs for their
first differing line). Outputs count by role (reprotrain/outputs.py): a result that differs makes
a run diverge; an incidental output that differs is listed with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from reprotrain.causes import causes, policy_off, seed_notes
from reprotrain.diffs import (
    first_tensor,
    first_trace_divergence,
    metric_deltas,
    param_kinds,
    tensor_delta,
    unmatched_digests,
)
from reprotrain.hashing import digest_bytes
from reprotrain.outputs import (
    Masker,
    Role,
    RunFiles,
    checkpoint_role,
    first_line_diffs,
    is_checkpoint,
    role,
    time_renamed,
)
from reprotrain.result import Result
from reprotrain.routing import run_queue
from reprotrain.spec import CompareSpec
from reprotrain.status import Status
from reprotrain.verdict import Verdict
from reprotrain.wire import JobFiles

EMPTY = digest_bytes(b"")
COMPONENTS = ("trace", "metrics", "model", "optimizer", "files", "stdout", "stderr")
LOGS = {"stdout": JobFiles.STDOUT, "stderr": JobFiles.STDERR}
MAX_OPENED = 8  # checkpoints opened for one verdict


CheckpointDiffer = Callable[[Path, Path], dict[str, Any]]  # reprotrain.job.checkpoints.compare_checkpoints


def compare(
    a: Result,
    b: Result,
    a_files: RunFiles | None = None,
    b_files: RunFiles | None = None,
    *,
    checkpoints: CheckpointDiffer | None = None,
) -> Verdict:
    """The verdict of b (a re-run) against a (the original), with its explanation.

    Without files the verdict still names the first differing tensor and file; a log whose bytes
    differ then counts as differing (it cannot be read line by line). With `checkpoints` (it needs
    torch, so the caller brings it), checkpoint files whose bytes differ are opened and compared
    tensor by tensor.
    """
    out: dict[str, Any] = {"a": a.job_id, "b": b.job_id}
    if a.status is not Status.SUCCEEDED or b.status is not Status.SUCCEEDED:
        failed = [_failed(side, r) for side, r in (("a", a), ("b", b)) if r.status is not Status.SUCCEEDED]
        out |= {"verdict": "incomparable", "reason": ", ".join(failed)}
    else:
        out |= Comparison(a, b, a_files, b_files, checkpoints).verdict()
    rows = causes(a, b)
    if out["verdict"] in ("metrics_identical", "diverged"):
        rows = policy_off(a, b) + rows
    out |= {"causes": rows, "likely_causes": [c["label"] for c in rows if c["likely_cause"]]}
    notes = seed_notes(a, b) + unmatched_digests(a, b)
    if kinds := param_kinds(a, b):  # e.g. a run traced before per-step digests had kinds
        what = (
            "host and GPU tensors in other places"
            if all(k.startswith("mixed.") for k in kinds)
            else f"{kinds[0]} vs {kinds[1]}"
        )
        notes.append(
            f"the per-step parameter digests are of different kinds ({what}): the traces "
            "are compared by step, metrics and data order, the model by its final state's digest"
        )
    qa, qb = (run_queue(r.fingerprint.model_dump(mode="json")) if r.fingerprint else None for r in (a, b))
    if qa and qb and qa != qb:  # never silent: a re-run sent anywhere (--env any) landed elsewhere
        out["cross_environment"] = True
        notes.append(f"the runs ran in different environments ({qa} vs {qb}): this compares the two")
    return Verdict.model_validate(out | {"notes": notes or None})


class Comparison:
    """Two succeeded runs, component by component, each difference classed as a result's or incidental."""

    def __init__(
        self,
        a: Result,
        b: Result,
        a_files: RunFiles | None,
        b_files: RunFiles | None,
        checkpoints: CheckpointDiffer | None = None,
    ) -> None:
        self.a, self.b, self.a_files, self.b_files = a, b, a_files, b_files
        self.open_checkpoints = checkpoints
        self.checkpoints: list[dict[str, Any]] = []  # what opening each differing checkpoint found
        spec = CompareSpec.model_validate(a.spec.get("compare") or {})
        self.spec, self.mask = spec, Masker(spec.noise)
        self.trace_div = first_trace_divergence(a, b)
        self.equal, self.absent = components(a, b, self.trace_div is None)
        self.files = file_status(a, b)
        self.incidental: list[dict[str, Any]] = []
        self.lines: list[dict[str, Any]] = []
        self.differs: list[str] = []  # results that differ: components, then result files
        self._classify()

    def _classify(self) -> None:
        for key, same in self.equal.items():
            if not same and key not in ("files", *LOGS):
                self.differs.append(key)
        paired = time_renamed(self.files)
        for rel, state in self.files.items():
            if state == "same" or rel in paired.values():
                continue
            r = role(rel, outputs=self.spec.outputs, volatile=self.spec.volatile)
            if rel in paired and not r.incidental:
                r = self._renamed(rel, paired[rel], r)
            elif not r.incidental and state == "differs" and is_checkpoint(rel):
                opened = self._checkpoint(rel, rel)
                r = opened if opened is not None and not r.declared else r
            if r.incidental:
                self.incidental.append({"what": rel, "state": state, "reason": r.reason})
            else:
                self.differs.append(rel)
        for stream in LOGS:
            if self.equal.get(stream) is False:
                self._log(stream)

    def _renamed(self, rel_a: str, rel_b: str, r: Role) -> Role:
        """One file under two names that differ only in a time (Hydra's dated run directories, a
        timestamped export): compared by content, like any other result."""
        fa, fb = (
            ((x.digests.get("files") or {}).get("files") or {}).get(rel)
            for x, rel in ((self.a, rel_a), (self.b, rel_b))
        )
        if fa and fb and fa["digest"] == fb["digest"]:
            return Role(True, f"renamed by a time ({rel_b} in b); contents identical")
        if is_checkpoint(rel_a) and (opened := self._checkpoint(rel_a, rel_b)) is not None and not r.declared:
            return Role(opened.incidental, f"{opened.reason} (as {rel_b} in b)")
        return Role(False, f"renamed by a time ({rel_b} in b); contents differ")

    def _checkpoint(self, rel: str, rel_b: str) -> Role | None:
        """Open two checkpoints whose bytes differ: identical tensors with only paths or container
        bytes differing are incidental; a differing tensor or field is named."""
        paths = [
            self.a_files.output(rel) if self.a_files else None,
            self.b_files.output(rel_b) if self.b_files else None,
        ]
        if self.open_checkpoints is None or paths[0] is None or paths[1] is None:
            return None
        if len(self.checkpoints) >= MAX_OPENED:  # each costs a child process; the rest count by digest
            self.checkpoints.append({"file": rel, "error": f"not opened: {MAX_OPENED} checkpoints were"})
            return None
        found = self.open_checkpoints(paths[0], paths[1])
        self.checkpoints.append({"file": rel, **found})
        incidental, reason = checkpoint_role(found)
        return Role(incidental, reason)

    def _log(self, stream: str) -> None:
        """A log whose bytes differ: lines that differ only in noise are incidental; any other
        difference (a printed or logged loss) is a result's, shown by its first line."""
        pa, pb = (f.job_file(LOGS[stream]) if f else None for f in (self.a_files, self.b_files))
        noise, real = first_line_diffs(pa, pb, self.mask) if pa and pb else (None, None)
        for diff in (noise, real):
            if diff is not None:
                self.lines.append({"stream": stream, **diff.__dict__})
        if noise is not None and real is None:
            reason = f"timing noise only (times, durations, rates, addresses), first at line {noise.line}"
            self.incidental.append({"what": stream, "state": "differs", "reason": reason})
        else:  # a real difference, or a log not readable here: its bytes differ, so it differs
            self.differs.append(stream)

    def verdict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "files": self.files,
            "equal": self.equal,
            "absent": self.absent,
            "identical": self.identical(),
            "incidental": self.incidental or None,
            "lines": self.lines or None,
            "checkpoints": self.checkpoints or None,
            "nondeterministic_ops": sorted({o.op for r in (self.a, self.b) for o in r.nondeterministic_ops}),
        }
        if not self.differs and not self.incidental:
            return out | {"verdict": "identical", "reason": "every digest is equal"}
        if not self.differs:
            n = len(self.incidental)
            reason = f"every result is equal; {n} incidental output{'s differ' if n > 1 else ' differs'}"
            return out | {"verdict": "results_identical", "reason": reason}
        if self.trace_div is None and self.a.trace:
            return out | {
                "verdict": "metrics_identical",
                "reason": f"trace equal; differs: {', '.join(self.differs)}",
            }
        return out | {"verdict": "diverged", "divergence": self._divergence()}

    def identical(self) -> list[str]:
        """The results that are bit-identical, by name: components, then output files."""
        same = [k for k, v in self.equal.items() if v and k not in ("files", *LOGS)]
        return same + [rel for rel, state in self.files.items() if state == "same"]

    def _divergence(self) -> dict[str, Any]:
        div: dict[str, Any] = {}
        trace_div = self.trace_div
        if trace_div is not None:
            div.update(step=trace_div["step"], differs=trace_div["differs"], metrics=trace_div["metrics"])
            if trace_div["data_order_first"]:
                div["first"] = "data order"
            elif "note" in trace_div:
                div["note"] = trace_div["note"]
        tensor = first_tensor(self.a, self.b, trace_div["step"] if trace_div else None)
        if tensor is not None:
            div["tensor"] = tensor["tensor"]
            div["tensor_step"] = tensor["step"]
            states = [f.job_file(JobFiles.STATE) if f else None for f in (self.a_files, self.b_files)]
            if states[0] is not None and states[1] is not None:
                div.update(tensor_delta(states[0], states[1], tensor["tensor"]) or {})
        if trace_div is None:
            div["differs"] = self.differs
            div["file"] = next((d for d in self.differs if d in self.files), None)
            if tensor is None:
                div |= self._checkpoint_tensor()
        deltas = [m for m in div.get("metrics", {}).values() if "abs" in m]
        if deltas:
            div["max_abs"] = max(m["abs"] for m in deltas)
            div["max_rel"] = max(m["rel"] for m in deltas)
        return div

    def _checkpoint_tensor(self) -> dict[str, Any]:
        """The first differing tensor of the first differing checkpoint, by key path, and its size."""
        for found in self.checkpoints:
            if first := found.get("first_tensor"):
                out = {"file": found["file"], "tensor": first["key"], "tensor_file": found["file"]}
                if "max_abs" in first:
                    out |= {"tensor_max_abs": first["max_abs"], "tensor_max_rel": first["max_rel"]}
                return out
        return {}


def _file_entry(r: Result, rel: str) -> dict[str, Any] | None:
    return ((r.digests.get("files") or {}).get("files") or {}).get(rel)


def _failed(side: str, r: Result) -> str:
    if r.error is None:
        return f"{side} {r.status.value}"
    first = (r.error.message.strip().splitlines() or [""])[0][:160]
    return f"{side} {r.status.value} ({r.error.type}: {first})"


def file_status(a: Result, b: Result) -> dict[str, str]:
    fa = (a.digests.get("files") or {}).get("files") or {}
    fb = (b.digests.get("files") or {}).get("files") or {}
    out = {}
    for rel in sorted(set(fa) | set(fb)):
        if rel not in fb:
            out[rel] = "only_a"
        elif rel not in fa:
            out[rel] = "only_b"
        else:
            out[rel] = "same" if fa[rel]["digest"] == fb[rel]["digest"] else "differs"
    return out


def _digest_equal(a: Result, b: Result, key: str) -> bool:
    da, db = a.digests.get(key), b.digests.get(key)
    if isinstance(da, dict) and isinstance(db, dict):
        return da.get("overall") == db.get("overall")
    return da == db


def _present(r: Result, key: str) -> bool:
    """Whether a run has this component at all: what was not tracked or produced is absent."""
    if key == "trace":
        return bool(r.trace)
    if key == "metrics":
        return bool(r.metrics)
    if key == "files":
        return bool((r.digests.get("files") or {}).get("files"))
    if key in LOGS:
        return r.digests.get(key) not in (None, EMPTY)
    return r.digests.get(key) is not None


def components(a: Result, b: Result, trace_equal: bool) -> tuple[dict[str, bool], list[str]]:
    """Equality of each component either run has, and the components neither has."""
    equal: dict[str, bool] = {}
    for key in COMPONENTS:
        if not (_present(a, key) or _present(b, key)):
            continue
        if key == "trace":
            equal[key] = trace_equal
        elif key == "metrics":
            equal[key] = not metric_deltas(a.metrics, b.metrics)
        else:
            equal[key] = _present(a, key) == _present(b, key) and _digest_equal(a, b, key)
    return equal, [k for k in COMPONENTS if k not in equal]
