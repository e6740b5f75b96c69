"""Why two runs may differ: the spec, the input data and the environment, each difference labelled."""

from __future__ import annotations

from typing import Any

from reprotrain import fingerprint
from reprotrain.result import Result

_SPEC_CAUSES = {
    "seed": "seed",
    "params": "job parameters",
    "determinism": "determinism policy",
    "entrypoint": "code entrypoint",
    "command": "command",
    "bundle": "code bundle",
    "device": "device",
    "inputs": "input paths",
    "env": "environment variable (spec)",
}


def inputs_diff(a: Result, b: Result) -> list[dict[str, Any]]:
    """The job's input data, by content (the spec's diff names changed paths)."""
    fa, fb = fingerprint.flatten(a.inputs, "inputs."), fingerprint.flatten(b.inputs, "inputs.")
    return [
        {"key": k, "a": fa.get(k), "b": fb.get(k), "label": "input data", "likely_cause": True}
        for k in sorted(set(fa) | set(fb))
        if fa.get(k) != fb.get(k) and not k.endswith(".path")
    ]


def policy_off(a: Result, b: Result) -> list[dict[str, Any]]:
    """Both runs unseeded: nothing was meant to reproduce; that alone explains a difference."""
    pa, pb = (((r.spec.get("determinism") or {}).get("policy")) for r in (a, b))
    if pa == pb == "off":
        return [
            {
                "key": "spec.determinism.policy",
                "a": "off",
                "b": "off",
                "label": "not seeded (policy off)",
                "likely_cause": True,
            }
        ]
    return []


def seed_notes(a: Result, b: Result) -> list[str]:
    """A run whose torch seed is not its spec's seeded torch itself (a script's own manual_seed),
    in the job process or in a Python process its command started (behind a shell, say)."""
    notes = []
    for side, r in (("a", a), ("b", b)):
        seed, policy = r.spec.get("seed"), (r.spec.get("determinism") or {}).get("policy")
        if r.determinism is None or seed is None or policy == "off":
            continue
        seeds = [r.determinism.effective.torch_initial_seed, *(r.determinism.process_seeds or [])]
        own = list(dict.fromkeys(s for s in seeds if s != seed))
        if own:
            which = ", ".join(map(str, own))
            notes.append(f"{side}: the job seeds torch itself (torch seed {which}; spec seed {seed})")
    return notes


_SPEC_FACTS = {"track": "tracking (what is digested and checkpointed, not what is computed)"}


def spec_diff(a: Result, b: Result) -> list[dict[str, Any]]:
    rows = []
    for key in sorted(set(a.spec) | set(b.spec)):
        label = _SPEC_CAUSES.get(key) or _SPEC_FACTS.get(key)
        if label and a.spec.get(key) != b.spec.get(key):
            rows.append(
                {
                    "key": f"spec.{key}",
                    "a": a.spec.get(key),
                    "b": b.spec.get(key),
                    "label": label,
                    "likely_cause": key in _SPEC_CAUSES,
                }
            )
    return rows


SHOWN_CODE_FILES = 12  # code files named one by one; past it, one row says how many more


def code_diff(a: Result, b: Result) -> list[dict[str, Any]]:
    """The code the runs ran from, where both record it (script mode): each file that differs or
    is on one side only, by its digest (null: not there), or the whole when a side has too many
    files to list them. What a bundle's digest alone cannot say: which file changed, and that a
    bundle that differs only in its archive holds the same files."""
    ca, cb = a.code, b.code
    if ca is None or cb is None or ca.digest == cb.digest:
        return []
    label = "code"
    if ca.tree is None or cb.tree is None:
        return [{"key": "code", "a": ca.digest, "b": cb.digest, "label": label, "likely_cause": True}]
    changed = [p for p in sorted(set(ca.tree) | set(cb.tree)) if ca.tree.get(p) != cb.tree.get(p)]
    rows = [
        {"key": f"code/{p}", "a": ca.tree.get(p), "b": cb.tree.get(p), "label": label, "likely_cause": True}
        for p in changed[:SHOWN_CODE_FILES]
    ]
    if len(changed) > SHOWN_CODE_FILES:
        more = len(changed) - SHOWN_CODE_FILES
        rows.append({"key": "code", "a": ca.digest, "b": cb.digest, "label": f"code ({more} more files)",
                     "likely_cause": True})  # fmt: skip
    return rows


def causes(a: Result, b: Result) -> list[dict[str, Any]]:
    """Every difference of spec, code, input data and environment; likely causes first."""
    rows = spec_diff(a, b) + code_diff(a, b) + inputs_diff(a, b)
    rows += fingerprint.diff(a.fingerprint, b.fingerprint)
    rows.sort(key=lambda c: not c["likely_cause"])
    return rows
