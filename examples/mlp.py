"""Function mode: a small MLP fitting a synthetic regression problem."""

import torch
from torch import nn


def train(ctx):
    g = ctx.generator()
    n, dim = ctx.params.get("samples", 512), ctx.params.get("dim", 16)
    x = torch.randn(n, dim, generator=g)
    y = x @ torch.randn(dim, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    data = torch.utils.data.TensorDataset(x, y)
    model = nn.Sequential(nn.Linear(dim, 32), nn.ReLU(), nn.Linear(32, 1)).to(ctx.device)
    opt = torch.optim.Adam(model.parameters(), lr=ctx.params.get("lr", 1e-2))
    ctx.track(model, opt)
    epochs = ctx.params.get("epochs", 3)
    ctx.total_steps = epochs * -(-n // 64)  # what `submit --wait` draws its bar and ETA from
    step = 0
    for _epoch in range(epochs):
        for xb, yb in ctx.dataloader(data, batch_size=64, shuffle=True):
            loss = nn.functional.mse_loss(model(xb.to(ctx.device)), yb.to(ctx.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            ctx.log(step, loss=loss)
            step += 1
    ctx.save("model.pt", model.state_dict())
    return {"loss": loss.item(), "steps": step}
