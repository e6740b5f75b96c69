"""Deliberately irreproducible jobs, to show what reprotrain catches.

mode "urandom": OS entropy is added to one parameter at step `noise_step`, so the
  re-run diverges exactly there, in that tensor.
mode "op": at step 2 calls `params.op`, an op torch flags as having no deterministic
  implementation: "put_" (any device), "histc" (CUDA), or "alert" (torch's own alert hook, as
  every such op calls it). Under `strict` the job fails naming the op; under `warn` it is listed.
mode "accumulate": every step sums 65,536 float32 values into 64 slots with
  `index_put_(accumulate=True)` (duplicate indices) and adds the result to the input: on CUDA
  the order of the atomic adds, and so the rounding, changes from run to run unless `strict`
  (the slots on `ctx.device`, the model and its data on the host).
"""

import os

import torch
from torch import nn


def train(ctx):
    p = ctx.params
    g = ctx.generator()
    x = torch.randn(128, 8, generator=g)
    y = x.sum(dim=1, keepdim=True)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ctx.track(model, opt)
    for step in range(p.get("steps", 10)):
        if p.get("mode") == "op" and step == 2:
            nondeterministic_op(p.get("op", "put_"), ctx.device)
        if p.get("mode") == "accumulate":
            n = torch.arange(1 << 16, device=ctx.device)
            slots = torch.zeros(64, device=ctx.device).index_put_(
                ((n * 7919) % 64,), torch.sin(n.float()), accumulate=True
            )
            x = x + slots[:8].cpu() * 1e-3  # the model and data stay on the host
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if p.get("mode", "urandom") == "urandom" and step == p.get("noise_step", 5):
            noise = int.from_bytes(os.urandom(4), "little") / 2**32 * 1e-3
            with torch.no_grad():
                model[2].weight[0, 0] += noise
        ctx.log(step, loss=loss)
    return {"loss": loss.item()}


def nondeterministic_op(op, device):
    t = torch.zeros(8, device=device)
    if op == "put_":
        t.put_(torch.tensor([1], device=device), torch.tensor([1.0], device=device))
    elif op == "histc":
        torch.histc(torch.rand(64, device=device), bins=4)
    elif op == "index_add_":  # deterministic on CUDA under strict since torch 2.x
        t.index_add_(0, torch.tensor([0, 0, 1], device=device), torch.ones(3, device=device))
    else:
        from torch._prims_common import alert_not_deterministic

        alert_not_deterministic("example_op")
