"""Deliberately irreproducible jobs, to show what reprotrain catches.

mode "urandom": OS entropy is added to one parameter at step `noise_step`, so the
  re-run diverges exactly there, in that tensor.
mode "alert": calls an op torch flags as having no deterministic implementation
  (torch's own alert, as index_add_ on CUDA raises); `strict` fails, `warn` lists it.
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
        if p.get("mode") == "alert" and step == 2:
            from torch._prims_common import alert_not_deterministic

            alert_not_deterministic("example_scatter_add")
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
