"""Bisect and pre-flight benchmarks: what op-level recording costs, on CPU.

For each model, one job of K logged steps run three ways through the real fork runner, repeated,
medians reported:

- plain: the job as it is (its own run time, `user_s`);
- recorded: `determinism.preflight: K`, the two copies alone (`preflight.seconds`): both copies
  fork from the job process, record every op's outputs and are compared as they run;
- the whole pre-flight job (`duration_s` of the job with the check and then its full run).

Ops recorded per second and the recording overhead per step come from the copies' run against
the plain run. On a 2-core machine the two copies run at once, one core each.

    python -m bench.bisecting [--steps 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from reprotrain.job.launcher import ForkRunner
from reprotrain.job.supervisor import execute
from reprotrain.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]


def models(steps: int) -> dict[str, dict[str, Any]]:
    return {
        "tiny CNN (DataLoader, 2 workers)": {
            "entrypoint": "reprotrain.examples.tiny_cnn:train",
            "params": {"epochs": 1, "samples": 32 * steps, "workers": 2},
        },
        "tiny CNN (no workers)": {
            "entrypoint": "reprotrain.examples.tiny_cnn:train",
            "params": {"epochs": 1, "samples": 32 * steps, "workers": 0},
        },
        "MLP with residual custom op": {
            "entrypoint": "reprotrain.examples.noisy_op:train",
            "params": {"steps": steps, "noisy": False, "width": 256},
        },
    }


def run(runner: ForkRunner, body: dict[str, Any], tmp: Path, preflight: int | None) -> Any:
    spec = {**body, "seed": 1, "device": "cpu", "determinism": {"policy": "strict"}}
    if preflight:
        spec["determinism"]["preflight"] = preflight
    out = Path(tempfile.mkdtemp(dir=tmp))
    r = execute(runner, parse_spec(spec), out / "job", code_dir=ROOT)
    assert r.status.value == "SUCCEEDED", r.error
    return r


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    table = Table(title=f"op recording, K = {args.steps} steps (medians of {args.repeat})")
    for col in ("model", "plain K steps", "copies recorded", "ops", "ops/s", "per step", "whole job"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as d, ForkRunner() as runner:
        tmp = Path(d)
        for name, body in models(args.steps).items():
            run(runner, body, tmp, None)  # warm: imports, page cache
            plain, rec, whole, ops = [], [], [], 0
            for _ in range(args.repeat):
                p = run(runner, body, tmp, None)
                c = run(runner, body, tmp, args.steps)
                plain.append(p.timing["user_s"])
                rec.append(c.preflight.seconds)
                whole.append(c.timing["duration_s"])
                ops = c.preflight.ops
            mp, mr = statistics.median(plain), statistics.median(rec)
            table.add_row(
                name,
                f"{mp * 1000:.0f} ms",
                f"{mr * 1000:.0f} ms ({mr / mp:.1f}×)",
                f"{ops}",
                f"{ops / mr:,.0f}",
                f"{(mr - mp) / args.steps * 1000:+.1f} ms",
                f"{statistics.median(whole) * 1000:.0f} ms",
            )
    Console().print(table)


if __name__ == "__main__":
    main()
