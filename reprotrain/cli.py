"""The `reprotrain` command line: run a job locally, compare two results.

Errors exit with status 2 and one line on stderr, never a traceback. `run` exits 0 when the
job succeeded, 1 when it did not; `compare` exits 0 for `identical`, 1 for any other verdict.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from reprotrain.errors import ReprotrainError, SpecInvalid
from reprotrain.spec import load_spec, parse_spec

EPILOG = """examples:
  reprotrain run examples/specs/mlp.yaml
  reprotrain run examples/specs/mlp.yaml --seed 7 --out runs/mlp-seed7
  reprotrain compare runs/mlp-a runs/mlp-b
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reprotrain",
        description="Run PyTorch training jobs reproducibly, and prove it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run one job locally through the worker's runner",
        description="Run a job spec (YAML or JSON) in a fresh job process and "
        "store its result, logs and outputs in a run directory.",
    )
    run.add_argument("spec", help="job spec file (YAML or JSON)")
    run.add_argument("--out", metavar="DIR", help="run directory (default: runs/NAME-TIME-RAND)")
    run.add_argument(
        "--code",
        metavar="DIR",
        help="job code: function mode imports from it (default: current directory);"
        " script mode runs in a fresh copy of it (default: the spec's directory)",
    )
    run.add_argument("--seed", type=int, help="override the spec's seed")
    run.add_argument(
        "--policy", choices=["off", "seeded", "strict", "warn"], help="override the spec's determinism policy"
    )
    run.add_argument(
        "--runner",
        choices=["fork", "spawn"],
        default="fork",
        help="fork from a torch-preloaded server (default) or a fresh interpreter",
    )
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    run.set_defaults(func=cmd_run)

    cmp = sub.add_parser(
        "compare",
        help="compare two stored results and print the verdict",
        description="Compare result B (a re-run) with result A (the original).",
    )
    cmp.add_argument("a", help="run directory or result.json of the original")
    cmp.add_argument("b", help="run directory or result.json of the re-run")
    cmp.add_argument("--json", action="store_true", help="print the verdict as JSON")
    cmp.set_defaults(func=cmd_compare)
    return p


def _load_run_spec(args: argparse.Namespace) -> Any:
    spec = load_spec(args.spec)
    if args.seed is None and args.policy is None:
        return spec
    data = spec.canonical()
    if args.seed is not None:
        data["seed"] = args.seed
    if args.policy is not None:
        data["determinism"]["policy"] = args.policy
    return parse_spec(data)


def cmd_run(args: argparse.Namespace) -> int:
    from worker.execute import execute
    from worker.launcher import ForkRunner, SpawnRunner

    spec = _load_run_spec(args)
    code = (
        Path(args.code)
        if args.code
        else (Path.cwd() if spec.mode == "function" else Path(args.spec).resolve().parent)
    )
    if not code.is_dir():
        raise SpecInvalid(f"code directory does not exist: {code}", field="--code")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/{spec.name}-{stamp}-{secrets.token_hex(2)}")
    runner = ForkRunner() if args.runner == "fork" else SpawnRunner()
    with runner:
        result = execute(runner, spec, out, code_dir=code)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(format_result(result, out))
    return 0 if result.status.value == "SUCCEEDED" else 1


def cmd_compare(args: argparse.Namespace) -> int:
    from reprotrain.compare import compare, state_file
    from reprotrain.result import load_result

    a, a_dir = load_result(args.a)
    b, b_dir = load_result(args.b)
    verdict = compare(a, b, state_file(a, a_dir), state_file(b, b_dir))
    print(json.dumps(verdict, indent=2, default=str) if args.json else format_verdict(verdict))
    return 0 if verdict["verdict"] == "identical" else 1


def _short(d: Any) -> str:
    return f"{d[:16]}…" if isinstance(d, str) else "-"


def _metrics(m: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()) or "-"


def format_result(r: Any, out: Path) -> str:
    dur = r.timing.get("duration_s")
    lines = [
        f"job       {r.name}  {r.status.value}" + (f" in {dur:.2f} s" if dur else ""),
        f"metrics   {_metrics(r.metrics)}",
        f"model     {_short((r.digests.get('model') or {}).get('overall'))}",
        f"files     {len((r.digests.get('files') or {}).get('files') or {})} output file(s)",
        f"policy    {r.determinism.get('policy', '-')}",
        f"env       {_short(r.env_digest)}",
    ]
    if r.error:
        lines.append(f"error     {r.error.get('message')}")
    if r.nondeterministic_ops:
        lines.append("nondet    " + ", ".join(f"{o['op']} ×{o['count']}" for o in r.nondeterministic_ops))
    lines.append(f"result    {out / 'result.json'}")
    return "\n".join(lines)


def format_verdict(v: dict[str, Any]) -> str:
    head = v["verdict"]
    div = v.get("divergence") or {}
    if head == "diverged":
        if div.get("step") is not None:
            head += f" at step {div['step']}"
        if div.get("first"):
            head += f" ({div['first']} first)"
        if div.get("tensor"):
            head += f", first differing tensor {div['tensor']}"
        if "max_abs" in div:
            head += f"; metrics differ by up to {div['max_abs']:.3g} abs, {div['max_rel']:.3g} rel"
        if div.get("file") and not div.get("tensor"):
            head += f"; first differing file {div['file']}"
    elif v.get("reason"):
        head += f" ({v['reason']})"
    lines = [f"verdict   {head}"]
    if "tensor_max_abs" in div:
        lines.append(
            f"tensor    {div['tensor']}: max abs {div['tensor_max_abs']:.3g}, "
            f"max rel {div['tensor_max_rel']:.3g} in the final state"
        )
    changed = {f: s for f, s in (v.get("files") or {}).items() if s != "same"}
    if changed:
        lines.append("files     " + ", ".join(f"{f} {s}" for f, s in list(changed.items())[:8]))
    likely = [c for c in v["causes"] if c["likely_cause"]]
    for i, c in enumerate(likely[:12]):
        lines.append(
            f"{'causes' if i == 0 else '':9} {c['label']}: {c['key']} {_val(c['a'])} → {_val(c['b'])}"
        )
    if not likely and v["verdict"] != "identical":
        lines.append("causes    no environment or spec difference found")
    return "\n".join(lines)


def _val(x: Any) -> str:
    s = json.dumps(x, default=str)
    return s if len(s) <= 40 else s[:37] + "…"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ReprotrainError as e:
        print(f"reprotrain: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reprotrain: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
