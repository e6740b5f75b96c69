"""The fork server's preload touches no CUDA: a process forked after CUDA's driver starts cannot use it."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import torch

def refuse(*a, **k):
    raise SystemExit("preload asked torch for its config: that counts GPUs, which starts CUDA's driver")

torch.__config__.show = refuse
torch._C._show_config = refuse
from reprotrain.job.forkserver import preload

preload()
print(torch.cuda.is_initialized())
"""


def test_preload_never_asks_torch_for_its_config() -> None:
    """Preloading (imports, static fingerprint facts) calls nothing that counts GPUs."""
    out = subprocess.run([sys.executable, "-P", "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
