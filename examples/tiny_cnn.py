"""Function mode: a small CNN on synthetic images, shuffled by a DataLoader with worker processes.

The dataset augments with numpy's global RNG inside the workers, so the run reproduces only
because ctx.dataloader seeds each worker as PyTorch's reproducibility notes describe.
"""

import numpy as np
import torch
from torch import nn


class Shapes(torch.utils.data.Dataset):
    """Noisy 12×12 images of horizontal or vertical bars; label = orientation."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.labels = torch.randint(0, 2, (n,), generator=generator)
        self.noise = 0.3 * torch.randn(n, 1, 12, 12, generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = self.noise[i].clone()
        pos = 2 + int(i % 8)
        if self.labels[i]:
            img[0, :, pos] += 1.0
        else:
            img[0, pos, :] += 1.0
        if np.random.rand() < 0.5:  # augmentation drawn in the worker process
            img = torch.flip(img, dims=[2])
        return img, self.labels[i]


def cnn(dropout: float | None = None) -> nn.Module:
    """Two conv layers and a linear head (with dropout before it, when given)."""
    head = [nn.Dropout(dropout)] if dropout is not None else []
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        *head,
        nn.Linear(16, 2),
    )


def train(ctx):
    p = ctx.params
    data = Shapes(p.get("samples", 256), ctx.generator())
    model = cnn().to(ctx.device)
    opt = torch.optim.SGD(model.parameters(), lr=p.get("lr", 0.1), momentum=0.9)
    ctx.track(model, opt)
    loader = ctx.dataloader(data, batch_size=32, shuffle=True, num_workers=p.get("workers", 2))
    ctx.total_steps = p.get("epochs", 2) * -(-len(data) // 32)  # batches of 32, the last one partial
    step = 0
    for epoch in range(p.get("epochs", 2)):
        for x, y in loader:
            out = model(x.to(ctx.device))
            loss = nn.functional.cross_entropy(out, y.to(ctx.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            acc = (out.argmax(1) == y.to(ctx.device)).float().mean()
            ctx.log(step, loss=loss, acc=acc, epoch=epoch)
            step += 1
    ctx.save("cnn.pt", model.state_dict())
    print(f"trained {step} steps, final loss {loss.item():.4f}")
