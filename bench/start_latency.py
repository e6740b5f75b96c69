"""Job start latency (request → user code running): fork runner, confined and not, vs a fresh interpreter.

All runners execute the same job process code on the same trivial job under the same policy;
the fork runner forks from a torch-preloaded server (confined: the strongest mode this machine
gives, entered before the job runs; interleaved job by job with an unconfined server), the spawn
runner starts a new interpreter that imports torch. A bare `python -c "import torch"` is printed
for reference.

    python -m bench.start_latency [--fork N] [--spawn N] [--policy strict]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reprotrain.job.launcher import ForkRunner, SpawnRunner
from reprotrain.job.supervisor import execute
from reprotrain.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]


def measure(runner, n: int, policy: str, tmp: Path, tag: str) -> list[float]:
    spec = parse_spec(
        {
            "name": "noop",
            "entrypoint": "reprotrain.examples.noop:train",
            "seed": 1,
            "determinism": {"policy": policy},
            "device": "cpu",
        }
    )
    out = []
    for i in range(n):
        r = execute(runner, spec, tmp / f"{tag}-{i}", code_dir=ROOT)
        assert r.status == "SUCCEEDED", r.error
        out.append(r.timing["start_latency_s"])
    return out


def bare_import(n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        out.append(time.monotonic() - t0)
    return out


def row(name: str, xs: list[float]) -> str:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(0.9 * len(xs)))]
    return (
        f"| {name:<34} | {len(xs):>3} | {1000 * statistics.median(xs):>9.1f} | "
        f"{1000 * p90:>9.1f} | {1000 * min(xs):>9.1f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fork", type=int, default=40, help="fork-runner jobs (default 40)")
    ap.add_argument("--spawn", type=int, default=5, help="fresh-interpreter jobs (default 5)")
    ap.add_argument("--policy", default="strict", choices=["off", "seeded", "strict", "warn"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        fork: list[float] = []
        confined: list[float] = []
        with ForkRunner(isolation="none") as fr, ForkRunner() as cr:
            measure(fr, 2, args.policy, tmp, "warm")
            measure(cr, 2, args.policy, tmp, "warm-c")
            for i in range(args.fork):  # interleaved: both see the same machine, job by job
                fork += measure(fr, 1, args.policy, tmp, f"fork{i}")
                confined += measure(cr, 1, args.policy, tmp, f"conf{i}")
            mode = cr.isolation.mode
        spawn = measure(SpawnRunner(), args.spawn, args.policy, tmp, "spawn")
    bare = bare_import(args.spawn)
    print(f"job start latency, request → user code running (policy {args.policy})\n")
    print("| runner                             |   n |  p50 (ms) |  p90 (ms) |  min (ms) |")
    print("|------------------------------------|-----|-----------|-----------|-----------|")
    print(row("fork server (torch preloaded)", fork))
    print(row(f"fork server, confined ({mode})", confined))
    print(row("fresh interpreter (same job path)", spawn))
    print(row("bare `python -c 'import torch'`", bare))
    cost = statistics.median(confined) / statistics.median(fork)
    print(f"\nconfinement costs {cost:.2f}× the unconfined fork start at p50 (goal: ≤ 2×)")
    ratio = statistics.median(spawn) / statistics.median(fork)
    print(
        f"\nfork runner is {ratio:.0f}× faster than a fresh interpreter at p50 "
        f"({statistics.median(bare) / statistics.median(fork):.0f}× vs a bare torch import)"
    )


if __name__ == "__main__":
    main()
