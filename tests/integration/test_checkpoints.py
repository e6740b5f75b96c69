"""Checkpoints compared tensor by tensor: a planted difference is named by key path, a re-pickled or
path-stamped identical state is not a difference, and unsafe files are never unpickled."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from reprotrain.compare import compare
from reprotrain.job.checkpoints import compare_checkpoints
from reprotrain.outputs import RunFiles

# Saves a seeded model's state like training scripts do: atomically under a temporary name (the
# zip archive's inner folder is named after it, and the state records it), with the directory it
# ran in (Lightning's ModelCheckpoint does), and optionally with one weight nudged by OS entropy.
SAVE = """
import os, sys, torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
if "--plant" in sys.argv:
    with torch.no_grad():
        model[2].weight[1, 3] += 1e-4 * (1 + int.from_bytes(os.urandom(4), "big") / 2**32)
tmp = f"ckpt-tmp{os.urandom(4).hex()}.pt"  # tempfile-style; a pid is 1 in every confined job
state = {
    "model": model.state_dict(),
    "epoch": 3,
    "callbacks": {"ModelCheckpoint": {"dirpath": os.getcwd(), "saved_as": os.path.abspath(tmp)}},
}
torch.save(state, tmp)
os.replace(tmp, "ckpt.pt")
"""


def _twice(run_job, tmp_path: Path, *args: str):
    (tmp_path / "save.py").write_text(SAVE)
    spec = {"command": ["python", "save.py", *args], "seed": 1, "device": "cpu"}
    (a, a_dir), (b, b_dir) = (run_job(spec, code_dir=tmp_path) for _ in range(2))
    assert a.status == b.status == "SUCCEEDED", (a.error, b.error)
    return compare(a, b, RunFiles.local(a_dir), RunFiles.local(b_dir), checkpoints=compare_checkpoints)


def test_identical_tensors_in_differing_bytes_reproduce(run_job, tmp_path: Path) -> None:
    """Same tensors; bytes differ by the archive's inner name and a randomly named path: results_identical.
    The directory each run worked in is the same path (the canonical slot), so `dirpath` is equal."""
    v = _twice(run_job, tmp_path)
    assert v.files["ckpt.pt"] == "differs"
    assert v.verdict == "results_identical", v
    (item,) = [i for i in v.incidental if i.what == "ckpt.pt"]
    assert item.reason == "tensors identical; only paths differ (callbacks/ModelCheckpoint/saved_as)"
    (found,) = v.checkpoints
    assert found.tensors == 4 and found.first_tensor is None
    assert [f["key"] for f in found.fields] == ["callbacks/ModelCheckpoint/saved_as"]


def test_a_planted_difference_is_named_down_to_the_tensor(run_job, tmp_path: Path) -> None:
    """One weight nudged: diverged, naming the file, the key path and the size of the difference."""
    v = _twice(run_job, tmp_path, "--plant")
    assert v.verdict == "diverged"
    div = v.divergence
    assert (div.file, div.tensor) == ("ckpt.pt", "model/2.weight")
    assert 0 < div.tensor_max_abs < 1e-1


def test_re_pickled_state_is_container_bytes_only(tmp_path: Path) -> None:
    """The same tensors saved in the legacy and the zip format: identical tensors, container bytes differ."""
    state = {"w": torch.arange(6.0).reshape(2, 3), "steps": [torch.tensor(1), torch.tensor(2)]}
    torch.save(state, tmp_path / "a.pt")
    torch.save(state, tmp_path / "b.pt", _use_new_zipfile_serialization=False)
    assert (tmp_path / "a.pt").read_bytes() != (tmp_path / "b.pt").read_bytes()
    found = compare_checkpoints(tmp_path / "a.pt", tmp_path / "b.pt")
    assert found == {"tensors": 3, "first_tensor": None, "fields": [], "structure": []}


def test_unsafe_pickles_are_not_opened(tmp_path: Path) -> None:
    """A checkpoint holding arbitrary objects is refused by the weights-only loader, not unpickled."""
    torch.save({"args": argparse.Namespace(lr=1)}, tmp_path / "a.pt")
    torch.save({"args": argparse.Namespace(lr=2)}, tmp_path / "b.pt")
    found = compare_checkpoints(tmp_path / "a.pt", tmp_path / "b.pt")
    assert found["error"].startswith("not opened as checkpoints")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_safetensors_files_compare_by_tensor(tmp_path: Path, dtype: torch.dtype) -> None:
    """Safetensors files (read by their header, no pickle) compare tensor by tensor too."""
    from reprotrain.job.digest import save_state_file

    w = torch.ones(3, 3, dtype=dtype)
    save_state_file({"w": w, "b": torch.zeros(3, dtype=dtype)}, tmp_path / "a.safetensors")
    w2 = w.clone()
    w2[2, 2] = 2
    save_state_file({"w": w2, "b": torch.zeros(3, dtype=dtype)}, tmp_path / "b.safetensors")
    # as the artifact store keeps them: named by digest, no suffix; the format is read from the bytes
    (tmp_path / "a.safetensors").rename(tmp_path / "a")
    (tmp_path / "b.safetensors").rename(tmp_path / "b")
    found = compare_checkpoints(tmp_path / "a", tmp_path / "b")
    assert found["first_tensor"]["key"] == "w" and found["first_tensor"]["max_abs"] == 1.0


def test_a_real_field_difference_is_kept_behind_many_path_differences(tmp_path: Path) -> None:
    """Thirty absolute paths differ, then a value: the value decides, though only 20 fields are listed;
    relative strings are not paths; NaN equals NaN."""
    from reprotrain.outputs import checkpoint_role

    a = {f"p{i}": f"/jobs/a/{i}" for i in range(30)} | {"name": "x/y", "nan": float("nan"), "lr": 0.1}
    b = {f"p{i}": f"/jobs/b/{i}" for i in range(30)} | {"name": "x/z", "nan": float("nan"), "lr": 0.1}
    torch.save(a, tmp_path / "a.pt")
    torch.save(b, tmp_path / "b.pt")
    found = compare_checkpoints(tmp_path / "a.pt", tmp_path / "b.pt")
    assert len(found["fields"]) == 20 and found["real_field"]["key"] == "name"
    assert checkpoint_role(found) == (False, "tensors identical; name differs")
