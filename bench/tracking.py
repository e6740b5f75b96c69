"""What per-step tracking costs a training loop (a benchmark: prints a table, passes nothing).

    python -m bench.tracking [--repeat N] [--steps 300] [--alternating 5] [--model mlp|cnn|all]

The same job runs tracked (`ctx.track(model, opt)` with `digest_every: 1`: every logged step
digests the whole model state) and untracked (the same loop and logs, no digests), interleaved
run by run through the fork runner, each run in a fresh job process. The job times its own loop;
the table gives medians and the overhead of tracking. Runs of one job vary more between
processes than tracking costs, so runs that switch tracking on and off in blocks within one
process measure the whole cost too, beside a floor (the same runs untracked, hashing the same
tensors with bare xxh3). Models: an MLP of 1.6 M parameters with Adam, and the tiny
CNN of the examples (data from a DataLoader in the job process).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import torch
import xxhash
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

    def step() -> dict:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    return drive(ctx, step, model)


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
    batches = (batch for _ in itertools.count() for batch in loader)

    def step() -> dict:
        x, y = next(batches)
        out = model(x)
        loss = nn.functional.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss, "acc": (out.argmax(1) == y).float().mean()}

    return drive(ctx, step, model)


def tracked_at(i: int, block: int) -> bool:
    """Whether step `i` is tracked in a run switching in blocks of `block` steps (0: always)."""
    return not block or (i // block) % 4 in (0, 3)


def drive(ctx, step, model) -> dict:
    """`steps` steps, each logged; the loop's time and the part of it in ctx.log. With `alternate`
    (a tracked run), tracking is on and off in blocks of that many steps (on, off, off, on, …, so
    a drift hits both alike), and the median time of a step (its work and its log) is given for
    each, leaving out the first step of each block (it pays for the block before it in cache).
    With `floor` (an untracked run that alternates), the on blocks hash the model's tensors with
    bare xxh3 after the log instead: what hashing the same bytes costs at the least."""
    steps, block = ctx.params["steps"], ctx.params.get("alternate", 0)
    state = ctx._model_state  # what ctx.track made; switched off by hand, here only
    views = [t.numpy() for t in model.state_dict().values()] if ctx.params.get("floor") else None
    times: dict[bool, list[float]] = {True: [], False: []}
    log_s, t0 = 0.0, time.perf_counter()
    for i in range(steps):
        on = tracked_at(i, block)
        if block and views is None:
            ctx._model_state = state if on else None
        t = time.perf_counter()
        metrics = step()
        t_log = time.perf_counter()
        ctx.log(i, **metrics)
        if views is not None and on:
            list(map(xxhash.xxh3_128_hexdigest, views))
        t_end = time.perf_counter()
        log_s += t_end - t_log
        if block and i % block:
            times[on].append(t_end - t)
    out = {"loop_s": time.perf_counter() - t0, "log_s": log_s}
    if block:
        out |= {f"step_{k}_s": statistics.median(times[v]) for k, v in (("on", True), ("off", False))}
    return out


JOBS = {  # row: (job function, its extra params, default runs of each variant)
    "mlp": ("mlp", {}, 7),
    "cnn": ("cnn", {"workers": 0}, 15),  # a run is 0.7 s, and the loop ratio moves ±1.5 % run to run
    "cnn, 2 loader workers": ("cnn", {"workers": 2}, 9),
}


BLOCK = 10  # steps per block of a run that switches tracking on and off


def spec(job: str, tracked: bool, steps: int, alternate: int = 0, floor: bool = False):
    fn, extra, _ = JOBS[job]
    return parse_spec(
        {
            "name": f"tracking-{fn}",
            "entrypoint": f"bench.tracking:{fn}_job",
            "seed": 1,
            "device": "cpu",
            "params": {"tracked": tracked, "steps": steps, "alternate": alternate, "floor": floor, **extra},
            "track": {"digest_every": 1},
        }
    )


def run_job(
    runner, job: str, tracked: bool, steps: int, job_dir: Path, alternate: int = 0, floor: bool = False
) -> dict:
    """The job's own timings (drive)."""
    r = execute(runner, spec(job, tracked, steps, alternate, floor), job_dir, code_dir=ROOT)
    assert r.status == "SUCCEEDED", r.error
    digested = sum(tracked_at(i, alternate) for i in range(steps)) if tracked else 0
    assert len(r.param_digests) == digested, "every tracked step digested, no other"
    return {k: float(v) for k, v in r.metrics.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--repeat", type=int, help="runs of each variant (default: 7 mlp, 15 cnn, 9 with workers)"
    )
    ap.add_argument("--steps", type=int, default=300, help="logged steps per run (default 300)")
    ap.add_argument(
        "--alternating", type=int, default=5, help="runs switching tracking on and off (default 5)"
    )
    ap.add_argument("--model", choices=["mlp", "cnn", "all"], default="all")
    args = ap.parse_args()
    jobs = [j for j in JOBS if args.model in ("all", j.split(",")[0])]
    rows = []
    with tempfile.TemporaryDirectory() as d, ForkRunner(isolation="none") as runner:
        tmp = Path(d)
        for job in jobs:
            times: dict[bool, list[float]] = {True: [], False: []}
            logs: dict[bool, list[float]] = {True: [], False: []}
            blocks: list[float] = []
            floors: list[float] = []
            name = job.replace(", ", "-").replace(" ", "_")
            run_job(runner, job, True, args.steps, tmp / f"warm-{name}")
            repeat = args.repeat or JOBS[job][2]
            for i in range(max(repeat, args.alternating)):  # interleaved: all see the same machine
                for tracked in (i % 2 == 0, i % 2 == 1)[: 2 if i < repeat else 0]:
                    m = run_job(runner, job, tracked, args.steps, tmp / f"{name}-{i}-{tracked}")
                    times[tracked].append(m["loop_s"])
                    logs[tracked].append(m["log_s"])
                if i < args.alternating:
                    m = run_job(runner, job, True, args.steps, tmp / f"{name}-{i}-alt", alternate=BLOCK)
                    blocks.append(m["step_on_s"] / m["step_off_s"] - 1)
                    m = run_job(runner, job, False, args.steps, tmp / f"{name}-{i}-floor", BLOCK, floor=True)
                    floors.append(m["step_on_s"] / m["step_off_s"] - 1)
            med = {k: (statistics.median(times[k]), statistics.median(logs[k])) for k in (True, False)}
            alt = (statistics.median(blocks), statistics.median(floors)) if blocks else None
            # each round's tracked run over its untracked one, side by side in time: a drift of the
            # machine over minutes (it moves the loops by more than tracking costs) cancels out
            paired = statistics.median(t / u - 1 for t, u in zip(times[True], times[False], strict=True))
            rows.append((job, repeat, med, min(times[True]), min(times[False]), paired, alt))
    print(f"tracking overhead at digest_every: 1, {args.steps} steps, medians of interleaved runs\n")
    print(
        "| model | runs | loop tracked s | untracked s | overhead (loops) | (loops, paired) "
        "| ctx.log tracked ms/step | untracked | overhead (in ctx.log) | overhead (on/off in one run) "
        "| floor: bare xxh3 on/off |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for job, repeat, med, mt, mu, paired, alt in rows:
        (tr, tr_log), (un, un_log) = med[True], med[False]
        print(
            f"| {job} | {repeat} | {tr:.3f} (min {mt:.3f}) | {un:.3f} (min {mu:.3f}) "
            f"| {100 * (tr / un - 1):+.1f} % | {100 * paired:+.1f} % "
            f"| {1000 * tr_log / args.steps:.3f} | {1000 * un_log / args.steps:.3f} "
            f"| {100 * (tr_log - un_log) / un:+.1f} % "
            f"| {'' if alt is None else f'{100 * alt[0]:+.1f} %'} "
            f"| {'' if alt is None else f'{100 * alt[1]:+.1f} %'} |"
        )
    print(
        "\noverhead (loops): ratio of median loop times, the whole cost as the job sees it, noise and all;"
        "\n(loops, paired): the median over rounds of a tracked run's loop over the untracked run beside it"
        "\n(a drift of the machine between rounds cancels out; the noise of single processes stays);"
        "\noverhead (in ctx.log): what the log calls take more when tracked, over the untracked loop (it"
        "\nleaves out what reading the state costs the next step in cache, and most of the noise);"
        f"\noverhead (on/off in one run): tracking switched on and off in blocks of {BLOCK} steps in one job"
        "\nprocess, the median step (work and log) with it over the median without, median of the runs"
        "\n(the whole cost, cache included, without the noise between processes);"
        "\nfloor: the same on/off runs untracked, the on blocks hashing the model's tensors with bare"
        "\nxxh3 after the log (what reading and hashing those bytes costs the loop at the least)"
    )


if __name__ == "__main__":
    main()
