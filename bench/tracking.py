"""What per-step tracking costs a training loop (a benchmark: prints a table, passes nothing).

    python -m bench.tracking [--repeat N] [--steps 300]

The same job runs tracked (`ctx.track(model, opt)` with `digest_every: 1`: every logged step
digests the whole model state) and untracked (the same loop and logs, no digests), interleaved
run by run through the fork runner, each run in a fresh job process. The job times its own loop;
the table gives medians and the overhead of tracking. Models: an MLP of 1.6 M parameters with
Adam, and the tiny CNN of the examples (data from a DataLoader in the job process).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from reprotrain.job.launcher import ForkRunner
from reprotrain.job.supervisor import execute
from reprotrain.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]


def mlp_job(ctx) -> dict:
    """784 → 1024 → 768 → 10 with Adam: 1.6 M parameters, 6.4 MB of float32 digested per step."""
    g = ctx.generator()
    model = nn.Sequential(
        nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 768), nn.ReLU(), nn.Linear(768, 10)
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    if ctx.params["tracked"]:
        ctx.track(model, opt)
    x, y = torch.randn(64, 784, generator=g), torch.randint(0, 10, (64,), generator=g)
    log_s, t0 = 0.0, time.perf_counter()
    for step in range(ctx.params["steps"]):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        t = time.perf_counter()
        ctx.log(step, loss=loss)
        log_s += time.perf_counter() - t
    return {"loop_s": time.perf_counter() - t0, "log_s": log_s}


def cnn_job(ctx) -> dict:
    """The examples' tiny CNN on its synthetic bars, shuffled by ctx.dataloader, with SGD; the
    loader in the job process (the shortest step), or with worker processes as the example has."""
    from reprotrain.examples.tiny_cnn import Shapes, cnn

    data = Shapes(256, ctx.generator())
    model = cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if ctx.params["tracked"]:
        ctx.track(model, opt)
    loader = ctx.dataloader(data, batch_size=32, shuffle=True, num_workers=ctx.params["workers"])
    step, log_s, t0 = 0, 0.0, time.perf_counter()
    while step < ctx.params["steps"]:
        for x, y in loader:
            out = model(x)
            loss = nn.functional.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            t = time.perf_counter()
            ctx.log(step, loss=loss, acc=(out.argmax(1) == y).float().mean())
            log_s += time.perf_counter() - t
            step += 1
            if step == ctx.params["steps"]:
                break
    return {"loop_s": time.perf_counter() - t0, "log_s": log_s}


JOBS = {  # row: (job function, its extra params, default runs of each variant)
    "mlp": ("mlp", {}, 7),
    "cnn": ("cnn", {"workers": 0}, 15),  # a run is 0.7 s, and the loop ratio moves ±1.5 % run to run
    "cnn, 2 loader workers": ("cnn", {"workers": 2}, 9),
}


def spec(job: str, tracked: bool, steps: int):
    fn, extra, _ = JOBS[job]
    return parse_spec(
        {
            "name": f"tracking-{fn}",
            "entrypoint": f"bench.tracking:{fn}_job",
            "seed": 1,
            "device": "cpu",
            "params": {"tracked": tracked, "steps": steps, **extra},
            "track": {"digest_every": 1},
        }
    )


def loop_seconds(runner, job: str, tracked: bool, steps: int, job_dir: Path) -> tuple[float, float]:
    """The job's loop time and the part of it spent in ctx.log."""
    r = execute(runner, spec(job, tracked, steps), job_dir, code_dir=ROOT)
    assert r.status == "SUCCEEDED", r.error
    if tracked:
        assert len(r.param_digests) == steps, "every step digested"
    return float(r.metrics["loop_s"]), float(r.metrics["log_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--repeat", type=int, help="runs of each variant (default: 7 mlp, 15 cnn, 9 with workers)"
    )
    ap.add_argument("--steps", type=int, default=300, help="logged steps per run (default 300)")
    ap.add_argument("--model", choices=["mlp", "cnn", "all"], default="all")
    args = ap.parse_args()
    jobs = [j for j in JOBS if args.model in ("all", j.split(",")[0])]
    rows = []
    with tempfile.TemporaryDirectory() as d, ForkRunner(isolation="none") as runner:
        tmp = Path(d)
        for job in jobs:
            times: dict[bool, list[float]] = {True: [], False: []}
            logs: dict[bool, list[float]] = {True: [], False: []}
            loop_seconds(runner, job, True, args.steps, tmp / f"warm-{len(rows)}")
            repeat = args.repeat or JOBS[job][2]
            for i in range(repeat):  # interleaved: both variants see the same machine
                for tracked in (i % 2 == 0, i % 2 == 1):
                    job_dir = tmp / f"{job.replace(', ', '-').replace(' ', '_')}-{i}-{tracked}"
                    loop, log = loop_seconds(runner, job, tracked, args.steps, job_dir)
                    times[tracked].append(loop)
                    logs[tracked].append(log)
            med = {k: (statistics.median(times[k]), statistics.median(logs[k])) for k in (True, False)}
            rows.append((job, repeat, med, min(times[True]), min(times[False])))
    print(f"tracking overhead at digest_every: 1, {args.steps} steps, medians of interleaved runs\n")
    print(
        "| model | runs | loop tracked s | untracked s | overhead (loops) "
        "| ctx.log tracked ms/step | untracked | overhead (in ctx.log) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for job, repeat, med, mt, mu in rows:
        (tr, tr_log), (un, un_log) = med[True], med[False]
        print(
            f"| {job} | {repeat} | {tr:.3f} (min {mt:.3f}) | {un:.3f} (min {mu:.3f}) "
            f"| {100 * (tr / un - 1):+.1f} % "
            f"| {1000 * tr_log / args.steps:.3f} | {1000 * un_log / args.steps:.3f} "
            f"| {100 * (tr_log - un_log) / un:+.1f} % |"
        )
    print(
        "\noverhead (loops): ratio of median loop times, the whole cost as the job sees it, noise and all;"
        "\noverhead (in ctx.log): what the log calls take more when tracked, over the untracked loop (it"
        "\nleaves out what reading the state costs the next step in cache, and most of the noise)"
    )


if __name__ == "__main__":
    main()
