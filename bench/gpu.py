"""GPU benchmarks: the strict policy's cost per training step; per-step digests on the device vs the host.

    python -m bench.gpu [--jobs 3] [--steps 30] [--warmup 5] [--repeat 10] [--only overhead|digests]
    python -m bench.gpu --device cpu --smoke    # the code paths, without a GPU (numbers mean nothing)

Strict vs off: a conv net (residual blocks, cuDNN convolutions and batch norm) and a transformer
block (torch's TransformerEncoderLayer, d_model 512) each train in jobs of their own, run as any
job runs (`execute` through the fork runner: the policy is applied in the job process before CUDA
starts, CUBLAS_WORKSPACE_CONFIG included), alternately under `off` and `strict`, which goes first
alternating too. A job builds its model and a fixed batch on the device, takes `--warmup` steps,
then times `--steps` steps (AdamW; CUDA synchronized after each) and reports the median; the
table gives the median over `--jobs` jobs per policy, and the spread of those medians.

Per-step digests: `step_digests` of a model's state on the device, as `ctx.log` takes them
(on_device=True: sum64 on the GPU, 8 bytes per 32 KiB back to the host) and through the host
(on_device=False: each tensor copied to the host and hashed with xxh3-128), timed with CUDA
synchronized around each call, medians of `--repeat`; GB/s counts the state's bytes. For scale: the
device's memory bandwidth (a large tensor's clone, bytes read and written) and a pageable
device-to-host copy.

Exits 2 with a message when torch sees no CUDA device (unless --device cpu).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ("off", "strict")
MODELS = {
    "conv": "conv net (5 residual blocks, 64×64 images, batch 64)",
    "transformer": "transformer block (d_model 512, 8 heads, batch 32×256 tokens)",
}
SMOKE_MODELS = {"conv": "conv net (smoke size)", "transformer": "transformer block (smoke size)"}


# the job: one model, trained and timed in the job process ------------------------------------


def _conv_net(width: int, blocks: int) -> Any:
    import torch
    from torch import nn

    class Residual(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(c, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(),
                nn.Conv2d(c, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x + self.body(x))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
            self.stage1 = nn.Sequential(*[Residual(width) for _ in range(blocks // 2)])
            # downsampling by a strided conv: no pooling whose CUDA backward strict would refuse
            self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
            self.stage2 = nn.Sequential(*[Residual(2 * width) for _ in range(blocks - blocks // 2)])
            self.head = nn.Linear(2 * width, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stage2(self.down(self.stage1(torch.relu(self.stem(x)))))
            return self.head(x.mean(dim=(2, 3)))

    return Net()


def build(name: str, smoke: bool, device: Any, generator: Any) -> tuple[Any, Any]:
    """The model, on `device`, and its loss on one fixed batch (made on the host, then moved)."""
    import torch
    from torch import nn

    if name == "conv":
        width, blocks, batch, side = (8, 2, 4, 16) if smoke else (64, 5, 64, 64)
        model = _conv_net(width, blocks).to(device)
        x = torch.randn(batch, 3, side, side, generator=generator).to(device)
        y = torch.randint(0, 10, (batch,), generator=generator).to(device)
        return model, lambda: nn.functional.cross_entropy(model(x), y)
    if name == "transformer":
        d, heads, ff, batch, tokens = (32, 4, 64, 2, 16) if smoke else (512, 8, 2048, 32, 256)
        model = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.1, batch_first=True, norm_first=True)
        model = model.to(device)
        x = torch.randn(batch, tokens, d, generator=generator).to(device)
        target = torch.randn(batch, tokens, d, generator=generator).to(device)
        return model, lambda: nn.functional.mse_loss(model(x), target)
    raise ValueError(f"unknown model {name!r}")


def train(ctx: Any) -> dict[str, Any]:
    """The benchmark job (entrypoint bench.gpu:train): params model, steps, warmup, smoke."""
    import torch

    p = ctx.params
    model, loss_fn = build(p["model"], bool(p.get("smoke")), ctx.device, ctx.generator())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sync = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()

    for _ in range(p["warmup"]):
        step()
    sync()
    times = []
    for _ in range(p["steps"]):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    params = sum(t.numel() for t in model.parameters())
    return {"step_ms": 1000 * statistics.median(times), "step_ms_min": 1000 * min(times), "params": params}


# strict vs off ---------------------------------------------------------------------------------


def _job_spec(model: str, policy: str, args: argparse.Namespace) -> Any:
    from reprotrain.spec import parse_spec

    return parse_spec(
        {
            "name": f"bench-gpu-{model}-{policy}",
            "entrypoint": "bench.gpu:train",
            "params": {"model": model, "steps": args.steps, "warmup": args.warmup, "smoke": args.smoke},
            "seed": 1,
            "determinism": {"policy": policy},
            "device": args.device,
        }
    )


def _why(r: Any) -> str:
    e = r.error
    if e is None:
        return r.status
    if e.nondeterministic_op:
        return f"refused {e.nondeterministic_op}"
    return f"{e.type}: {e.message}"[:120]


def overhead(args: argparse.Namespace) -> None:
    from reprotrain.job.launcher import ForkRunner
    from reprotrain.job.supervisor import execute

    models = SMOKE_MODELS if args.smoke else MODELS
    times: dict[tuple[str, str], list[float]] = {(m, p): [] for m in models for p in POLICIES}
    failed: dict[tuple[str, str], str] = {}
    params: dict[str, int] = {}
    results: dict[str, Any] = {}
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory() as d, ForkRunner(isolation="none") as runner:
        n = 0
        for i in range(args.jobs):
            for model in models:
                order = POLICIES if i % 2 == 0 else POLICIES[::-1]
                for policy in order:
                    if (model, policy) in failed:
                        continue
                    r = execute(runner, _job_spec(model, policy, args), Path(d) / f"job{n}", code_dir=ROOT)
                    n += 1
                    results[policy] = r
                    if r.status != "SUCCEEDED":
                        failed[(model, policy)] = _why(r)
                        print(f"job {n}: {model} {policy} failed: {failed[(model, policy)]}", file=sys.stderr)
                        continue
                    times[(model, policy)].append(float(r.metrics["step_ms"]))
                    params[model] = int(r.metrics["params"])
                    print(f"job {n}: {model} {policy} {r.metrics['step_ms']:.2f} ms", file=sys.stderr)
    print(
        f"strict vs off: one training step on {args.device} (AdamW), median over {args.steps} steps after "
        f"{args.warmup} warm-up, median of {args.jobs} jobs per policy ({n} jobs, "
        f"{time.monotonic() - t_start:.0f} s)\n"
    )
    rows = []
    for model, label in models.items():
        off, strict = times[(model, "off")], times[(model, "strict")]
        cost = "-"
        if off and strict:
            cost = f"{100 * (statistics.median(strict) / statistics.median(off) - 1):+.1f}%"
        rows.append(
            [
                label,
                f"{params[model] / 1e6:.1f}M" if model in params else "?",
                *(f"{statistics.median(xs):.2f}" if xs else "failed" for xs in (off, strict)),
                cost,
                " / ".join(_spread(xs) for xs in (off, strict)),
            ]
        )
    print(table(["model", "params", "off (ms)", "strict (ms)", "overhead", "spread off / strict"], rows))
    for (model, policy), why in failed.items():
        print(f"\n{models[model]} under {policy}: the job failed: {why}")
    if "off" in results and "strict" in results:
        print("\n" + _knob_diff(results["off"], results["strict"]))
        print(_recorded(results["strict"]))


def table(head: list[str], rows: list[list[str]]) -> str:
    """A markdown table, each column as wide as its widest cell; numbers right-aligned."""
    widths = [max(len(c) for c in col) for col in zip(head, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        out = [
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(out) + " |"

    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def _spread(xs: list[float]) -> str:
    """Range of the job medians around their median, in percent."""
    if len(xs) < 2:
        return "-"
    m = statistics.median(xs)
    return f"±{100 * (max(xs) - min(xs)) / 2 / m:.1f}%"


def _knob_diff(off: Any, strict: Any) -> str:
    """What strict changed, as the two jobs recorded torch's effective settings."""
    if off.determinism is None or strict.determinism is None:
        return "effective knobs: not recorded"
    a = off.determinism.effective.model_dump(mode="json")
    b = strict.determinism.effective.model_dump(mode="json")
    diff = [f"{k} {a.get(k)} → {b[k]}" for k in b if k != "torch_initial_seed" and a.get(k) != b[k]]
    return "strict's effective knobs that differ from off's: " + ("; ".join(diff) or "none")


def _recorded(r: Any) -> str:
    """What the job side recorded of this host's torch and CUDA (its fingerprint)."""
    f = r.fingerprint
    if f is None:
        return "fingerprint: not recorded"
    line = f"jobs recorded: torch {f.torch.version} (built for CUDA {f.torch.cuda_build})"
    line += f", Python {f.python.version}"
    cuda = f.cuda
    if getattr(cuda, "used", False):
        gpus = ", ".join(g.name for g in cuda.gpus) or "no GPU listed"
        line += f"; CUDA runtime {cuda.runtime}, cuDNN {cuda.cudnn}, driver {cuda.driver}, {gpus}"
    return line


# per-step digests, on the device vs through the host -------------------------------------------


def _digest_models(smoke: bool) -> dict[str, Any]:
    from torch import nn

    if smoke:
        return {"MLP (smoke size)": nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))}
    return {
        "MLP 784-1024-768-10": nn.Sequential(
            nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 768), nn.ReLU(), nn.Linear(768, 10)
        ),
        "transformer block (d_model 512)": nn.TransformerEncoderLayer(512, 8, 2048, batch_first=True),
        "transformer, 8 layers of d_model 1024": nn.TransformerEncoder(
            nn.TransformerEncoderLayer(1024, 16, 4096, batch_first=True), 8, enable_nested_tensor=False
        ),
    }


def _median_time(fn: Any, repeat: int, sync: Any) -> float:
    fn()  # warm-up: kernels, the device's constant tables
    fn()
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def digests(args: argparse.Namespace) -> None:
    import torch

    try:
        from reprotrain.job.digest import device_checksums, step_digests
    except ImportError as e:
        print(f"bench.gpu: reprotrain.job.digest has no step_digests/device_checksums ({e})", file=sys.stderr)
        sys.exit(2)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"\nper-step digests of a model's state on {device}: median of {args.repeat} calls\n")
    rows = []
    for label, model in _digest_models(args.smoke).items():
        state = dict(model.to(device).state_dict())
        nbytes = sum(t.numel() * t.element_size() for t in state.values())
        params = sum(t.numel() for t in state.values())
        on = _median_time(lambda s=state: step_digests(s, on_device=True), args.repeat, sync)
        via = _median_time(lambda s=state: step_digests(s, on_device=False), args.repeat, sync)
        rows.append(
            [
                label,
                f"{params / 1e6:.1f}M",
                str(len(state)),
                f"{nbytes / 1e6:.1f}",
                f"{1000 * on:.2f}",
                f"{nbytes / on / 1e9:.1f}",
                f"{1000 * via:.2f}",
                f"{nbytes / via / 1e9:.1f}",
                f"{via / on:.1f}×",
            ]
        )
    head = ["state", "params", "tensors", "MB", "on device (ms)", "GB/s", "via host (ms)", "GB/s", "speed-up"]
    print(table(head, rows))
    size = (64 << 20) if args.smoke else (2 << 30)
    x = torch.empty(size, dtype=torch.uint8, device=device)
    part = x[: min(size, 512 << 20)]
    clone = _median_time(x.clone, args.repeat, sync)
    d2h = _median_time(part.cpu, args.repeat, sync)
    print(
        f"\nfor scale: {device} memory bandwidth {2 * size / clone / 1e9:.0f} GB/s (clone of "
        f"{size >> 20} MiB, bytes read and written); pageable device→host copy "
        f"{part.numel() / d2h / 1e9:.1f} GB/s ({part.numel() >> 20} MiB)"
    )
    _check_exact(device_checksums, device)


def _check_exact(device_checksums: Any, device: Any) -> None:
    """sum64 is a function of the bits alone: the device's sums equal the host's on the same tensors."""
    import torch

    g = torch.Generator().manual_seed(0)
    host = [torch.randn(n, generator=g) for n in (1, 1000, 4096 * 8 + 3, 1 << 20)]
    host.append(torch.randint(0, 255, (777,), generator=g, dtype=torch.uint8))
    same = device_checksums([t.to(device) for t in host]) == device_checksums(host)
    print(f"sum64 on {device} equals sum64 on the host for {len(host)} tensors: {'yes' if same else 'NO'}")
    if not same:  # the report's benches stage then says failed, not ok
        sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=3, help="jobs per model and policy (default 3)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per job (default 30)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    ap.add_argument("--repeat", type=int, default=10, help="timed calls per digest row (default 10)")
    ap.add_argument("--only", choices=["overhead", "digests"], help="one of the two tables")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--smoke", action="store_true", help="tiny models, to check the code paths")
    args = ap.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"bench.gpu: no CUDA device visible to torch {torch.__version__} (built for CUDA "
            f"{torch.version.cuda}); nothing to measure. `--device cpu --smoke` checks the code paths.",
            file=sys.stderr,
        )
        sys.exit(2)
    if args.device == "cuda":  # CUDA starts in this process only; the jobs fork from a server of their own
        print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}\n")
    if args.smoke:
        print("(a smoke run: tiny models, to check the code paths; the numbers mean nothing)\n")
    if args.only in (None, "overhead"):
        overhead(args)
    if args.only in (None, "digests"):
        digests(args)


if __name__ == "__main__":
    main()
