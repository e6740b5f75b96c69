"""A real nondeterministic kernel inside one named submodule: what `reprotrain bisect` finds.

`reprotrain_examples::noisy_add` is a custom op registered through torch.library. Its CPU kernel
adds OS entropy (about 1e-2) to one element of its output at step `noise_step` unless `noisy` is
false, so the runs agree op for op until that call in `encoder.1.mix` at that step.
"""

import os

import torch
from torch import nn


@torch.library.custom_op("reprotrain_examples::noisy_add", mutates_args=())
def noisy_add(x: torch.Tensor, y: torch.Tensor, step: int, noise_step: int, noisy: bool) -> torch.Tensor:
    out = x + y
    if noisy and step == noise_step:
        out[0, 0] += (1 + int.from_bytes(os.urandom(4), "little") / 2**32) * 1e-2
    return out


def _grads(ctx, grad):
    return grad, grad, None, None, None


noisy_add.register_autograd(_grads)


class Mix(nn.Module):
    """A residual add through the custom op."""

    def __init__(self, noise_step: int, noisy: bool) -> None:
        super().__init__()
        self.step, self.noise_step, self.noisy = 0, noise_step, noisy

    def forward(self, x, skip):
        return torch.ops.reprotrain_examples.noisy_add(x, skip, self.step, self.noise_step, self.noisy)


class Block(nn.Module):
    def __init__(self, width: int, mix: nn.Module) -> None:
        super().__init__()
        self.lin = nn.Linear(width, width)
        self.mix = mix

    def forward(self, x):
        return self.mix(torch.tanh(self.lin(x)), x)


class Net(nn.Module):
    def __init__(self, width: int, noise_step: int, noisy: bool) -> None:
        super().__init__()
        quiet = Mix(noise_step, noisy=False)
        self.encoder = nn.Sequential(Block(width, quiet), Block(width, Mix(noise_step, noisy)))
        self.head = nn.Linear(width, 1)

    def forward(self, x):
        return self.head(self.encoder(x))


def train(ctx):
    p = ctx.params
    g = ctx.generator()
    width = p.get("width", 16)
    x = torch.randn(64, width, generator=g)
    y = x.sum(dim=1, keepdim=True)
    model = Net(width, p.get("noise_step", 5), p.get("noisy", True))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ctx.track(model, opt)
    ctx.total_steps = steps = p.get("steps", 10)
    for step in range(steps):
        for m in model.modules():
            if isinstance(m, Mix):
                m.step = step
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ctx.log(step, loss=loss)
    return {"loss": loss.item()}
