"""An unchanged third-party training script: no seeding, no reprotrain imports.

It draws from torch's and numpy's global RNGs, prints, and writes a file. Under the `seeded`
policy reprotrain seeds it before its first line, so a re-run is identical; under `off` it is not.
"""

import json
import random
import sys

import numpy as np
import torch

w = torch.randn(4, 4)
for step in range(5):
    w = w - 0.1 * (w @ torch.randn(4, 4))
    print(f"step {step} norm {w.norm().item():.6f}")
out = {"norm": w.norm().item(), "np": float(np.random.rand()), "py": random.random(), "argv": sys.argv[1:]}
with open("weights.json", "w") as f:
    json.dump(out, f)
torch.save(w, "w.pt")
