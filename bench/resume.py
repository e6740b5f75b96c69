"""Cost of a checkpoint and of going on from one (a benchmark: prints a table, passes nothing).

    python -m bench.resume [--repeat 3]

Each model with Adam, after one step (so the optimizer has state): the time `Checkpointer.take`
spends writing a checkpoint (state dict of model, optimizer and scheduler, every RNG, the logs so
far, the working directory) and its size on disk; then the time a resumed attempt spends reading
it back (torch.load of the state, load_state_dict of model, optimizer and scheduler). The worker's
copy into the artifact store comes on top, off the job's path (its heartbeat thread). Medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from reprotrain.examples.tiny_cnn import cnn
from reprotrain.job.context import Context
from reprotrain.job.resume import STATE, Checkpointer
from reprotrain.report import EventWriter


def mlp_100mb() -> nn.Module:
    return nn.Sequential(*[nn.Linear(2560, 2560) for _ in range(4)])  # 26.2 M float32: 105 MB


def context(root: Path, model: nn.Module) -> Context:
    (root / "work").mkdir(parents=True, exist_ok=True)
    ctx = Context(
        seed=1, params={}, device=torch.device("cpu"), workspace=root / "work", inputs={},
        events=EventWriter(root / "events.jsonl"), digest_every=1, seed_dataloader=True, job_dir=root,
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    first = next(model.parameters())
    x = torch.randn(4, 1, 12, 12) if first.dim() == 4 else torch.randn(4, first.shape[1])
    model(x).sum().backward()
    opt.step()
    ctx.track(model, opt, scheduler=sched)
    ctx.checkpoint_every(1)
    return ctx


def measure(build, repeat: int) -> tuple[float, float, float]:
    writes, reads, size = [], [], 0.0
    with tempfile.TemporaryDirectory() as d:
        ctx = context(Path(d), build())
        for _ in range(repeat):
            t0 = time.perf_counter()
            ck = ctx._checkpointer.take(("steps", 0), 1, None)
            writes.append(time.perf_counter() - t0)
            size = sum(p.stat().st_size for p in ck.rglob("*") if p.is_file()) / 1e6
            t0 = time.perf_counter()
            saved = torch.load(ck / STATE, map_location="cpu", weights_only=False)
            ctx.model.load_state_dict(saved["model"])
            ctx.optimizer.load_state_dict(saved["optimizer"])
            ctx._schedulers[0].load_state_dict(saved["schedulers"][0])
            reads.append(time.perf_counter() - t0)
        assert isinstance(ctx._checkpointer, Checkpointer)
    return statistics.median(writes) * 1e3, size, statistics.median(reads) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    print(f"{'model':<28} {'params':>10} {'write ms':>9} {'MB':>8} {'read back ms':>13}")
    for name, build in (("tiny CNN + Adam", cnn), ("4×2560² MLP + Adam (105 MB)", mlp_100mb)):
        n = sum(x.numel() for x in build().parameters())
        write, size, read = measure(build, args.repeat)
        print(f"{name:<28} {n:>10,} {write:>9.1f} {size:>8.2f} {read:>13.1f}")


if __name__ == "__main__":
    main()
