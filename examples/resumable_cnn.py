"""Function mode with checkpoints: the tiny CNN, written to resume exactly after a lost worker.

What makes it resumable (README, "Checkpoints and exact resume"): epochs from `ctx.epochs`, batches
from a `ctx.dataloader` loader (shuffled, with worker processes that augment with their own RNG),
steps counted by `ctx.step`, the LR scheduler registered with `ctx.track`, and the job's own
running values in `ctx.state`. Dropout draws from torch's global RNG in the training process.
"""

import time

import torch
from torch import nn

from reprotrain.examples.tiny_cnn import Shapes, cnn


def train(ctx):
    p = ctx.params
    data = Shapes(p.get("samples", 256), ctx.generator())
    model = cnn(dropout=0.2).to(ctx.device)
    opt = torch.optim.Adam(model.parameters(), lr=p.get("lr", 0.01))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    ctx.track(model, opt, scheduler=sched)
    loader = ctx.dataloader(data, batch_size=32, shuffle=True, num_workers=p.get("workers", 2))
    epochs = p.get("epochs", 4)
    ctx.total_steps = epochs * len(loader)
    if p.get("checkpoint_every"):
        ctx.checkpoint_every(p["checkpoint_every"])
    ctx.state.setdefault("best", float("inf"))
    if p.get("state_mb"):  # more state for each checkpoint to carry (to try larger checkpoints)
        ctx.state.setdefault("carried", torch.zeros(p["state_mb"] << 18))
    print("training", sum(x.numel() for x in model.parameters()), "parameters")
    for epoch in ctx.epochs(epochs):
        model.train()
        for x, y in loader:
            out = model(x.to(ctx.device))
            loss = nn.functional.cross_entropy(out, y.to(ctx.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            ctx.state["best"] = min(ctx.state["best"], loss.item())
            ctx.log(ctx.step, loss=loss, lr=sched.get_last_lr()[0], epoch=epoch)
            time.sleep(p.get("step_sleep", 0))  # room for a test to kill the worker mid-epoch
        sched.step()
        ctx.save(f"epoch-{epoch}.pt", model.state_dict())
        print(f"epoch {epoch}: best loss {ctx.state['best']:.5f}")
    return {"best": ctx.state["best"], "steps": ctx.step}
