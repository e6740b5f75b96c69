"""Per-step digests on CUDA: sum64 computed on the device is the host's function of the same bits.

The checks run in a child process (CUDA is never started in the test process, as conftest.py says);
the child takes the device as its argument, so the same script runs on the CPU in tests/unit's
terms, and here on the GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.gpu

CHILD = r"""
import json, sys
import torch
from reprotrain.job.digest import device_checksums, step_digests, sum64_reference

device = torch.device(sys.argv[1])
g = torch.Generator().manual_seed(0)
host = [
    torch.randn(1, generator=g),
    torch.randn(4096 * 8 + 3, generator=g),               # more than a row, ragged
    torch.randn(3, 1 << 20, generator=g),                 # many rows, several tensors' worth
    torch.randn(33, 17, generator=g).t(),                 # not contiguous
    torch.randn(999, generator=g).to(torch.bfloat16),
    torch.randint(-(2**62), 2**62, (5000,), generator=g, dtype=torch.int64),
    torch.randint(0, 2, (77,), generator=g).bool(),
    torch.tensor(3.5),                                    # 0-dim
    torch.randn(500, generator=g, dtype=torch.complex64), # complex: its bits, not its values
    torch.randn(1001, generator=g).half(),
    torch.randint(-128, 128, (4097,), generator=g, dtype=torch.int8),
    torch.randint(-(2**15), 2**15, (2049,), generator=g, dtype=torch.int16),
    torch.randint(-(2**31), 2**31, (1025,), generator=g, dtype=torch.int32),
    torch.randn(3 * 4096 + 10, generator=g)[3:],          # a view at an odd offset
    torch.randn(4096 * 8 * 40 + 5, generator=g),          # large, not a whole number of rows
]
on_device = [t.to(device) for t in host]
raw = lambda t: t.cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
here = device_checksums(host)
out = {
    "same_as_host": device_checksums(on_device) == here,
    "same_in_small_budget": device_checksums(on_device, budget=1 << 16) == here,
    "same_in_tiny_budget": device_checksums(on_device, budget=1) == here,
    "reference": [device_checksums([t])[0] == sum64_reference(raw(t)) for t in on_device if t.numel() < 1e5],
}
model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
cpu_state = dict(model.state_dict())
state = {k: v.to(device) for k, v in cpu_state.items()}
a, b = step_digests(state), step_digests(state)
out["kind"] = a["overall"].split(":")[0]
out["stable"] = a == b
out["host_path_is_device_free"] = step_digests(state, on_device=False) == step_digests(cpu_state)
state["0.weight"][3, 5] += 1
c = step_digests(state)
out["one_change"] = [k for k in a["tensors"] if a["tensors"][k] != c["tensors"][k]]
out["overall_changed"] = a["overall"] != c["overall"]
print(json.dumps(out))
"""


def child(device: str) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", CHILD, device], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def out() -> dict:
    return child("cuda")


def test_sum64_on_cuda_equals_the_host_and_the_reference(out: dict) -> None:
    """Same bits, same sum: on the device, on the host, in any chunking, and by the definition."""
    assert out["same_as_host"] and out["same_in_small_budget"] and out["same_in_tiny_budget"]
    assert out["reference"] and all(out["reference"])


def test_step_digests_of_a_cuda_model(out: dict) -> None:
    """A CUDA state traces as sum64, stably; one changed weight changes its entry alone; the host
    path (on_device=False) gives what the same state on the CPU gives."""
    assert out["kind"] == "sum64"
    assert out["stable"]
    assert out["one_change"] == ["0.weight"] and out["overall_changed"]
    assert out["host_path_is_device_free"]
