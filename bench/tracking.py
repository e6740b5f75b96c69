"""What per-step tracking costs a training loop (a benchmark: prints a table, passes nothing).

    python -m bench.tracking [--repeat N] [--steps 300] [--mixed 12] [--model mlp|cnn|all]

`ctx.track(model, opt)` with `digest_every: 1` digests the whole model state at every logged
step. Three measures of what that costs (the first and the last with 95 % intervals):

- loops: the same job tracked and untracked, each run in a fresh job process through the fork
  runner, run side by side round after round; each round's tracked loop over its untracked one.
  The whole cost as a job sees it, and the noise between processes with it (runs of one job
  differ by several per cent on 2 cores, whatever they do): a second untracked run in each round
  over the untracked one (an A/A control) shows that noise alone;
- in ctx.log: what the log calls take more when tracked, over the untracked loop: the digest
  itself, without what it costs the steps after it;
- in one process: job processes tracking each step or not at random, each step's work and log
  timed: a tracked step's log over an untracked one's, and what a tracked step adds to the work
  of each of the next steps, the differences of medians (random, independent choices put the
  other steps' tracking alike on both sides and cannot fall in step with the job's own periods,
  an epoch's first batch say). What every tracked step costs, split into the digest and what it
  costs the steps after it, with the machine's drift and the differences between processes held
  apart; a cost paid by a few steps only (a garbage collection, say) is the loops' to see.

Beside the loops and the in-process measure, the same measure of a floor: untracked runs that hash
the model's tensors with bare xxh3 after the log (at every step; in one process, at the drawn
steps), what reading those bytes costs at the least. Models: an MLP of 1.6 M
parameters with Adam, and the tiny CNN of the examples (data from a DataLoader, in the job process
or in 2 worker processes).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
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


def schedule(steps: int, seed: int) -> list[bool]:
    """Whether each step is tracked, each drawn at random (its own generator: the job's randomness
    is untouched), so no period of the job (an epoch's first batch, say) can fall on one side."""
    rng = random.Random(seed)
    return [rng.random() < 0.5 for _ in range(steps)]


def drive(ctx, step, model) -> dict:
    """`steps` steps, each logged; the loop's time and the part of it in ctx.log. With `mixed`,
    tracking (or, with `floor`, bare xxh3 of the model's tensors after the log) is on at the steps
    `schedule` draws, and each step's work and log times are written to `times_to`."""
    p = ctx.params
    steps, mixed = p["steps"], "seed" in p
    on_at = schedule(steps, p["seed"]) if mixed else [p["tracked"] or bool(p.get("floor"))] * steps
    state = ctx._model_state  # what ctx.track made; switched off by hand, here only
    views = [t.numpy() for t in model.state_dict().values()] if p.get("floor") else None
    work: list[float] = []
    logs: list[float] = []
    t0 = time.perf_counter()
    for i in range(steps):
        on = on_at[i]
        if mixed and views is None:
            ctx._model_state = state if on else None
        t = time.perf_counter()
        metrics = step()
        t_log = time.perf_counter()
        ctx.log(i, **metrics)
        if views is not None and on:
            list(map(xxhash.xxh3_128_hexdigest, views))
        work.append(t_log - t)
        logs.append(time.perf_counter() - t_log)
    if mixed:
        Path(p["times_to"]).write_text(json.dumps({"work": work, "log": logs}))
    return {"loop_s": time.perf_counter() - t0, "log_s": sum(logs)}


LAGS = 3  # how many steps after a tracked one its cost is looked for
Interval = tuple[float, float, float]  # a median (or estimate) and its 95 % interval


WARM = 10  # a process's first steps, left out: they pay for first allocations


def step_rows(on_at: list[bool], work: list[float], log: list[float]) -> np.ndarray:
    """One row a step (from the WARM-th): tracked at it and at each of the LAGS steps before, then
    its work time less the median of the steps around it (the machine's drift held apart),
    and its log time less the process's median."""
    on = np.asarray(on_at, dtype=float)
    lagged = [on[WARM - k : len(on) - k] for k in range(LAGS + 1)]
    g = np.asarray(log[WARM:])
    return np.column_stack([*lagged, _detrended(work[WARM:]), g - np.median(g)])


def _detrended(x: list[float], half: int = 15) -> np.ndarray:
    """Each value less the median of the `half` values on each side (itself left out: a median
    that could be the value itself would make zeros that pin the medians taken of them)."""
    a = np.asarray(x)
    mode = "reflect" if len(a) > half else "edge"  # reflect: no copies of an end value around it
    around = np.lib.stride_tricks.sliding_window_view(np.pad(a, half, mode=mode), 2 * half + 1)
    return a - np.median(np.delete(around, half, axis=1), axis=1)


def step_costs(rows: np.ndarray) -> np.ndarray:
    """What a tracked step costs, in seconds: its log's time more, and what it
    adds to the work of each of the next LAGS steps, each the difference of the medians of the
    steps that had a tracked step that many before and those that had not (the steps are tracked
    at random, each independently, so the other steps' tracking falls alike on both sides; medians
    so that the rare slow step, an epoch's first with loader workers, weighs nothing). So it sees
    what every tracked step pays, not a cost paid by a few (a garbage collection, say): only the
    loops see that. The neighbours' median takes in a little of the next steps' cost (~10 % low).
    [the log's share, the next steps' share]."""

    def more(col: int, of: int) -> float:
        return float(np.median(rows[rows[:, col] == 1, of]) - np.median(rows[rows[:, col] == 0, of]))

    work, log = LAGS + 1, LAGS + 2
    return np.array([more(0, log), sum(more(k, work) for k in range(1, LAGS + 1))])


def cost_ci(groups: list[np.ndarray], step_s: float, resamples: int = 1000) -> dict[str, Interval]:
    """`step_costs` and their sum over `step_s` (an untracked step: the untracked loop's median over
    its steps, as "in ctx.log" takes it), each with a 95 % interval from a two-level bootstrap
    (processes drawn again, then each drawn process's steps): differences between processes count."""
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(resamples):
        drawn = [groups[k] for k in rng.integers(0, len(groups), len(groups))]
        boot.append(step_costs(np.concatenate([g[rng.integers(0, len(g), len(g))] for g in drawn])))
    est, boot_a = step_costs(np.concatenate(groups)) / step_s, np.array(boot) / step_s
    cols = {
        "whole": (est.sum(), boot_a.sum(axis=1)),
        "log": (est[0], boot_a[:, 0]),
        "after": (est[1], boot_a[:, 1]),
    }
    return {
        k: (float(e), float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5)))
        for k, (e, b) in cols.items()
    }


def median_ci(values: list[float]) -> Interval:
    """The median, and a distribution-free interval for it of at least 95 % (order statistics,
    the binomial way; with 6–8 values it is their range, 97–99 %; 5 values allow no more than 94 %)."""
    x, n = sorted(values), len(values)
    k = 0  # x[k], x[n - 1 - k] miss the median with chance 2 P(B <= k), B ~ Binomial(n, 1/2)
    while k + 1 < n - 2 - k and 2 * sum(math.comb(n, j) for j in range(k + 2)) / 2**n <= 0.05:
        k += 1
    return statistics.median(x), x[k], x[n - 1 - k]


JOBS = {  # row: (job function, its extra params, default rounds of the loops)
    "mlp": ("mlp", {}, 7),
    "cnn": ("cnn", {"workers": 0}, 15),  # a run is 0.7 s
    "cnn, 2 loader workers": ("cnn", {"workers": 2}, 9),
}


def spec(job: str, tracked: bool, steps: int, **extra):
    fn, params, _ = JOBS[job]
    return parse_spec(
        {
            "name": f"tracking-{fn}",
            "entrypoint": f"bench.tracking:{fn}_job",
            "seed": 1,
            "device": "cpu",
            "params": {"tracked": tracked, "steps": steps, **params, **extra},
            "track": {"digest_every": 1},
        }
    )


def run_job(runner, job: str, tracked: bool, steps: int, job_dir: Path, **extra) -> dict:
    """The job's own timings (drive), checked: every tracked step digested, no other."""
    r = execute(runner, spec(job, tracked, steps, **extra), job_dir, code_dir=ROOT)
    assert r.status == "SUCCEEDED", r.error
    on_at = schedule(steps, extra["seed"]) if "seed" in extra else [True] * steps
    assert len(r.param_digests) == (sum(on_at) if tracked else 0), "every tracked step digested, no other"
    return {k: float(v) for k, v in r.metrics.items()}


def mixed_run(runner, job: str, tracked: bool, steps: int, job_dir: Path, seed: int) -> np.ndarray:
    """One job process with tracking (or, untracked, the floor's bare xxh3) on at random steps."""
    job_dir.mkdir(parents=True)
    times_to = job_dir / "times.json"
    extra = {"seed": seed, "floor": not tracked, "times_to": str(times_to)}
    run_job(runner, job, tracked, steps, job_dir / "job", **extra)
    times = json.loads(times_to.read_text())
    return step_rows(schedule(steps, seed), times["work"], times["log"])


def measure(runner, job: str, tmp: Path, steps: int, repeat: int, mixed: int) -> dict:
    """All runs of one job, round by round, each round's runs in an order drawn at random, so all
    see the same machine and none always runs after the same kind (a run leaves the machine's
    caches and memory as it used them). `again` is an untracked run beside the untracked one:
    its ratio to it is what the loops measure when nothing differs (an A/A control); `floor` is an
    untracked run hashing the model's tensors with bare xxh3 at every step."""
    loops: dict[str, list[float]] = {"tracked": [], "untracked": [], "again": [], "floor": []}
    logs: dict[str, list[float]] = {k: [] for k in loops}
    runs_of: dict[str, list[np.ndarray]] = {"mixed": [], "floor": []}
    name = job.replace(", ", "-").replace(" ", "_")
    run_job(runner, job, True, steps, tmp / f"warm-{name}")
    for i in range(max(repeat, mixed)):
        runs = [("loop", k) for k in loops if i < repeat] + [("in-process", k) for k in runs_of if i < mixed]
        for how, kind in random.Random(i).sample(runs, len(runs)):  # no kind always after another
            job_dir = tmp / f"{name}-{i}-{how}-{kind}"
            if how == "loop":
                m = run_job(runner, job, kind == "tracked", steps, job_dir, floor=kind == "floor")
                loops[kind].append(m["loop_s"])
                logs[kind].append(m["log_s"])
            else:
                runs_of[kind].append(mixed_run(runner, job, kind == "mixed", steps, job_dir, seed=i))
    u = loops["untracked"]
    log_ms = {k: 1000 * statistics.median(v) / steps for k, v in logs.items()}
    step_s = statistics.median(u) / steps
    return {
        "loops": {k: statistics.median(v) for k, v in loops.items()},
        "paired loops": median_ci([t / b - 1 for t, b in zip(loops["tracked"], u, strict=True)]),
        "a/a loops": median_ci([a / b - 1 for a, b in zip(loops["again"], u, strict=True)]),
        "floor loops": median_ci([f / b - 1 for f, b in zip(loops["floor"], u, strict=True)]),
        "log ms": log_ms,
        "in ctx.log": (log_ms["tracked"] - log_ms["untracked"]) / 1000 / step_s,
        "in one process": cost_ci(runs_of["mixed"], step_s) if runs_of["mixed"] else None,
        "floor": cost_ci(runs_of["floor"], step_s) if runs_of["floor"] else None,
    }


def pct(x: float) -> str:
    return f"{100 * x:+.1f} %"


def interval(m: Interval | None) -> str:
    return "" if m is None else f"{pct(m[0])} [{pct(m[1])}, {pct(m[2])}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, help="rounds of the loops (default: 7 mlp, 15 cnn, 9 with workers)")
    ap.add_argument("--steps", type=int, default=300, help="logged steps per run (default 300)")
    ap.add_argument("--mixed", type=int, default=12, help="runs tracking random steps (default 12)")
    ap.add_argument("--model", choices=["mlp", "cnn", "all"], default="all")
    args = ap.parse_args()
    jobs = [j for j in JOBS if args.model in ("all", j.split(",")[0])]
    with tempfile.TemporaryDirectory() as d, ForkRunner(isolation="none") as runner:
        rows = [
            (job, measure(runner, job, Path(d), args.steps, args.repeat or JOBS[job][2], args.mixed))
            for job in jobs
        ]
    print(f"tracking overhead at digest_every: 1, {args.steps} steps a run; medians [95 % intervals]\n")
    print(
        "| model | loop tracked s | untracked s | overhead (loops, paired) | A/A: untracked again "
        "| floor: bare xxh3 | ctx.log tracked ms/step | untracked | overhead (in ctx.log) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for job, m in rows:
        print(
            f"| {job} | {m['loops']['tracked']:.3f} | {m['loops']['untracked']:.3f} "
            f"| {interval(m['paired loops'])} | {interval(m['a/a loops'])} | {interval(m['floor loops'])} "
            f"| {m['log ms']['tracked']:.3f} | {m['log ms']['untracked']:.3f} | {pct(m['in ctx.log'])} |"
        )
    if any(m["in one process"] for _, m in rows):
        print(
            f"\nin one process ({args.mixed} job processes each, tracking at random steps), a step's cost:\n"
        )
        print("| model | | whole | its log | the next steps' work |")
        print("|---|---|---|---|---|")
        for job, m in rows:
            for what in ("in one process", "floor"):
                c = m[what]
                label = "tracked" if what == "in one process" else "floor: bare xxh3"
                cells = " | ".join(interval(c[k]) for k in ("whole", "log", "after"))
                print(f"| {job} | {label} | {cells} |")
    print(
        "\noverhead (loops, paired): each round's tracked run over the untracked run beside it, each a"
        "\nfresh job process; the whole cost as the job sees it, with the noise between processes;"
        "\nA/A: a second untracked run in each round over the untracked one: the loops' noise alone;"
        "\nfloor (loops): an untracked run hashing the model's tensors with bare xxh3 at every step, over"
        "\nthe untracked one: what reading those bytes each step costs at the least;"
        "\noverhead (in ctx.log): what the log calls take more when tracked, over the untracked loop (the"
        "\ndigest itself, less what it costs the steps after it);"
        "\nin one process: each step tracked or not at random; a tracked step's log time over an"
        f"\nuntracked one's, and what it adds to the work of each of the {LAGS} steps after it (differences"
        "\nof medians), over an untracked step as in ctx.log: what every tracked step costs, with the"
        "\nmachine's drift and the differences between processes held apart (a cost paid by a few"
        "\nsteps only is the loops' to see);"
        "\nfloor: the same, untracked, the drawn steps hashing the model's tensors with bare xxh3 after"
        "\nthe log: what reading and hashing those bytes costs the loop at the least"
    )


if __name__ == "__main__":
    main()
