"""What per-step tracking costs a training loop (a benchmark: prints a table, passes nothing).

    python -m bench.tracking [--repeat N] [--steps 300] [--paired 6] [--model mlp|cnn|all]

`ctx.track(model, opt)` with `digest_every: 1` digests the whole model state at every logged
step. Three measures of what that costs, each a median with a 95 % bootstrap interval:

- loops: the same job tracked and untracked, each run in a fresh job process through the fork
  runner, run side by side round after round; each round's tracked loop over its untracked one.
  The whole cost as a job sees it, and the noise between processes with it (runs of one job
  differ by several per cent on 2 cores, whatever they do): a second untracked run in each round
  over the untracked one (an A/A control) shows that noise alone;
- in ctx.log: what the log calls take more when tracked, over the untracked loop: the digest
  itself, without what it costs the next step in cache;
- in one process: one job process switches tracking on and off in blocks of steps, the order of
  each pair of blocks drawn at random (so it cannot fall in step with the job's own periods, an
  epoch's first batch say); each pair's median step (work and log, the block's first step left
  out: it pays for the block before) with tracking over the one without. The whole cost, cache
  included, with the drift of the machine and the differences between processes paired away.

Beside it, the same paired measure of a floor: untracked runs whose on blocks hash the model's
tensors with bare xxh3 after the log, what reading those bytes costs at the least. Models: an MLP
of 1.6 M parameters with Adam, and the tiny CNN of the examples (data from a DataLoader, in the
job process or in 2 worker processes).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
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


def pair_schedule(steps: int, block: int, seed: int) -> list[bool]:
    """Whether each step is tracked: pairs of blocks of `block` steps, one on and one off, which
    first drawn at random for each pair (its own generator: the job's randomness is untouched)."""
    rng, flags = random.Random(seed), []
    while len(flags) < steps:
        first = rng.random() < 0.5
        flags += [first] * block + [not first] * block
    return flags[:steps]


def drive(ctx, step, model) -> dict:
    """`steps` steps, each logged; the loop's time and the part of it in ctx.log. With `block`,
    tracking (or, with `floor`, bare xxh3 of the model's tensors after the log) is on and off by
    `pair_schedule`, and each step's time (work and log) is written to `times_to`."""
    p = ctx.params
    steps, block = p["steps"], p.get("block", 0)
    on_at = pair_schedule(steps, block, p["order_seed"]) if block else [p["tracked"]] * steps
    state = ctx._model_state  # what ctx.track made; switched off by hand, here only
    views = [t.numpy() for t in model.state_dict().values()] if p.get("floor") else None
    times: list[float] = []
    log_s, t0 = 0.0, time.perf_counter()
    for i in range(steps):
        on = on_at[i]
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
        times.append(t_end - t)
    if block:
        Path(p["times_to"]).write_text(json.dumps(times))
    return {"loop_s": time.perf_counter() - t0, "log_s": log_s}


def pair_ratios(times: list[float], steps: int, block: int, seed: int) -> list[float]:
    """Each pair of blocks' median step with tracking over its median step without, less one."""
    on_at, out = pair_schedule(steps, block, seed), []
    for start in range(0, steps - 2 * block + 1, 2 * block):
        a, b = (range(s + SETTLE, s + block) for s in (start, start + block))
        on, off = (a, b) if on_at[start] else (b, a)
        out.append(statistics.median(times[i] for i in on) / statistics.median(times[i] for i in off) - 1)
    return out


def median_ci(groups: list[list[float]], resamples: int = 2000) -> tuple[float, float, float]:
    """The median of all values, and a 95 % interval for it from a two-level bootstrap (groups
    drawn again, then each drawn group's values): the values of one job process are not
    independent of each other, and differences between processes count."""
    rng = np.random.default_rng(0)
    arrays = [np.asarray(g) for g in groups]
    boot = []
    for _ in range(resamples):
        drawn = [arrays[k] for k in rng.integers(0, len(arrays), len(arrays))]
        boot.append(np.median(np.concatenate([rng.choice(g, len(g)) for g in drawn])))
    mid = float(np.median(np.concatenate(arrays)))
    return mid, float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


JOBS = {  # row: (job function, its extra params, default rounds of the loops)
    "mlp": ("mlp", {}, 7),
    "cnn": ("cnn", {"workers": 0}, 15),  # a run is 0.7 s
    "cnn, 2 loader workers": ("cnn", {"workers": 2}, 9),
}
BLOCK = 2  # steps per block of a run that switches tracking on and off (the shortest: the least noise)
SETTLE = 1  # a block's first steps, left out: they pay for the block before


def spec(job: str, tracked: bool, steps: int, **extra):
    fn, params, _ = JOBS[job]
    return parse_spec(
        {
            "name": f"tracking-{fn}",
            "entrypoint": f"bench.tracking:{fn}_job",
            "seed": 1,
            "device": "cpu",
            "params": {"tracked": tracked, "steps": steps, "order_seed": 0, **params, **extra},
            "track": {"digest_every": 1},
        }
    )


def run_job(runner, job: str, tracked: bool, steps: int, job_dir: Path, **extra) -> dict:
    """The job's own timings (drive), checked: every tracked step digested, no other."""
    r = execute(runner, spec(job, tracked, steps, **extra), job_dir, code_dir=ROOT)
    assert r.status == "SUCCEEDED", r.error
    block = extra.get("block")
    on_at = pair_schedule(steps, block, extra["order_seed"]) if block else [True] * steps
    assert len(r.param_digests) == (sum(on_at) if tracked else 0), "every tracked step digested, no other"
    return {k: float(v) for k, v in r.metrics.items()}


def paired_run(runner, job: str, tracked: bool, steps: int, job_dir: Path, seed: int) -> list[float]:
    """One job process switching tracking (or, untracked, the floor's bare xxh3) on and off."""
    job_dir.mkdir(parents=True)
    times_to = job_dir / "times.json"
    extra = {"block": BLOCK, "order_seed": seed, "floor": not tracked, "times_to": str(times_to)}
    run_job(runner, job, tracked, steps, job_dir / "job", **extra)
    return pair_ratios(json.loads(times_to.read_text()), steps, BLOCK, seed)


def measure(runner, job: str, tmp: Path, steps: int, repeat: int, paired: int) -> dict:
    """All runs of one job, round by round, the order of each round's runs rotating, so all see
    the same machine. `again` is an untracked run beside the untracked one: its ratio to it is
    what the loops measure when nothing differs (an A/A control)."""
    loops: dict[str, list[float]] = {"tracked": [], "untracked": [], "again": []}
    logs: dict[str, list[float]] = {k: [] for k in loops}
    in_process: list[list[float]] = []
    floor: list[list[float]] = []
    name = job.replace(", ", "-").replace(" ", "_")
    run_job(runner, job, True, steps, tmp / f"warm-{name}")
    for i in range(max(repeat, paired)):
        runs = (list(loops) if i < repeat else []) + (["pairs", "floor"] if i < paired else [])
        for kind in runs[i % len(runs) :] + runs[: i % len(runs)]:
            job_dir = tmp / f"{name}-{i}-{kind}"
            if kind in loops:
                m = run_job(runner, job, kind == "tracked", steps, job_dir)
                loops[kind].append(m["loop_s"])
                logs[kind].append(m["log_s"])
            else:
                (in_process if kind == "pairs" else floor).append(
                    paired_run(runner, job, kind == "pairs", steps, job_dir, seed=i)
                )
    u = loops["untracked"]
    log_ms = {k: 1000 * statistics.median(v) / steps for k, v in logs.items()}
    return {
        "loops": {k: statistics.median(v) for k, v in loops.items()},
        "paired loops": median_ci([[t / b - 1] for t, b in zip(loops["tracked"], u, strict=True)]),
        "a/a loops": median_ci([[a / b - 1] for a, b in zip(loops["again"], u, strict=True)]),
        "log ms": log_ms,
        "in ctx.log": (log_ms["tracked"] - log_ms["untracked"]) * steps / 1000 / statistics.median(u),
        "in one process": median_ci(in_process) if in_process else None,
        "floor": median_ci(floor) if floor else None,
        "pairs": sum(map(len, in_process)),
    }


def pct(x: float) -> str:
    return f"{100 * x:+.1f} %"


def interval(m: tuple[float, float, float] | None) -> str:
    return "" if m is None else f"{pct(m[0])} [{pct(m[1])}, {pct(m[2])}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, help="rounds of the loops (default: 7 mlp, 15 cnn, 9 with workers)")
    ap.add_argument("--steps", type=int, default=300, help="logged steps per run (default 300)")
    ap.add_argument("--paired", type=int, default=6, help="runs switching tracking on and off (default 6)")
    ap.add_argument("--model", choices=["mlp", "cnn", "all"], default="all")
    args = ap.parse_args()
    jobs = [j for j in JOBS if args.model in ("all", j.split(",")[0])]
    with tempfile.TemporaryDirectory() as d, ForkRunner(isolation="none") as runner:
        rows = [
            (job, measure(runner, job, Path(d), args.steps, args.repeat or JOBS[job][2], args.paired))
            for job in jobs
        ]
    print(f"tracking overhead at digest_every: 1, {args.steps} steps a run; medians [95 % intervals]\n")
    print(
        "| model | loop tracked s | untracked s | overhead (loops, paired) | A/A: untracked again "
        "| ctx.log tracked ms/step "
        "| untracked | overhead (in ctx.log) | overhead (in one process) | floor: bare xxh3, in one process |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for job, m in rows:
        print(
            f"| {job} | {m['loops']['tracked']:.3f} | {m['loops']['untracked']:.3f} "
            f"| {interval(m['paired loops'])} | {interval(m['a/a loops'])} "
            f"| {m['log ms']['tracked']:.3f} | {m['log ms']['untracked']:.3f} | {pct(m['in ctx.log'])} "
            f"| {interval(m['in one process'])} | {interval(m['floor'])} |"
        )
    pairs = rows[0][1]["pairs"]
    print(
        "\noverhead (loops, paired): each round's tracked run over the untracked run beside it, each a"
        "\nfresh job process; the whole cost as the job sees it, with the noise between processes;"
        "\nA/A: a second untracked run in each round over the untracked one: the loops' noise alone;"
        "\noverhead (in ctx.log): what the log calls take more when tracked, over the untracked loop (the"
        "\ndigest itself, less what reading the state costs the next step in cache);"
        f"\noverhead (in one process): {pairs} pairs of blocks of {BLOCK} steps, one tracked and one not, in"
        f"\n{args.paired} job processes, which block first drawn at random; each pair's median step (work and"
        "\nlog, a block's first step left out) tracked over untracked: the whole cost, cache included;"
        "\nfloor: the same, untracked, the on blocks hashing the model's tensors with bare xxh3 after the"
        "\nlog: what reading and hashing those bytes costs the loop at the least"
    )


if __name__ == "__main__":
    main()
