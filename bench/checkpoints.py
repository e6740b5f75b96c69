"""Cost of comparing two checkpoint files tensor by tensor (a benchmark: prints a table, passes nothing).

    python -m bench.checkpoints [--mb 100 400] [--repeat 3]

Each size: a state dict of float32 tensors (16 MiB each) saved twice with torch.save, once equal
and once with one element of the last tensor changed; the time is the whole comparison as the
verdict runs it (a bounded child process that imports torch, loads both files, compares every
tensor bit for bit), median of the repeats. The child's fixed cost is measured on two tiny files.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from reprotrain.job.checkpoints import compare_checkpoints


def _state(mb: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = max(1, mb // 16)
    return {f"layer{i}.weight": torch.randn(4 << 20, generator=g) for i in range(n)}


def _time(a: Path, b: Path, repeat: int) -> tuple[float, dict]:
    times, found = [], {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        found = compare_checkpoints(a, b)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, nargs="+", default=[100, 400])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        torch.save({"x": torch.zeros(1)}, root / "tiny-a.pt")
        torch.save({"x": torch.zeros(1)}, root / "tiny-b.pt")
        fixed, _ = _time(root / "tiny-a.pt", root / "tiny-b.pt", args.repeat)
        rows = []
        for mb in args.mb:
            state = _state(mb)
            torch.save(state, root / "a.pt")
            torch.save(state, root / "b.pt")
            last = next(reversed(state))
            state[last][-1] += 1
            torch.save(state, root / "c.pt")
            size = (root / "a.pt").stat().st_size * 2 / 1e6
            equal, f1 = _time(root / "a.pt", root / "b.pt", args.repeat)
            differ, f2 = _time(root / "a.pt", root / "c.pt", args.repeat)
            assert f1["first_tensor"] is None and f2["first_tensor"]["key"] == last, (f1, f2)
            rows.append((mb, size, equal, differ))
    print(f"checkpoint comparison, tensor by tensor (median of {args.repeat}; child process included)\n")
    print("| state dict | both files | equal (s) | one differs (s) | ms per 100 MB, fixed cost off |")
    print("|------------|-----------|-----------|-----------------|-------------------------------|")
    print(f"| tiny       |      0 MB | {fixed:9.3f} |                 | fixed: child + torch import   |")
    for mb, size, equal, differ in rows:
        per = (equal - fixed) / size * 100 * 1000
        print(f"| {mb:7d} MB | {size:6.0f} MB | {equal:9.3f} | {differ:15.3f} | {per:29.0f} |")


if __name__ == "__main__":
    main()
