"""Canonical digests of tensors, model and optimizer state, and the saved final state file.

A tensor's digest covers its dtype, shape and bytes in little-endian order; it is taken one
tensor at a time (a GPU tensor is copied to the host alone), never of a copy of the whole state.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

import torch
from blake3 import blake3

from reprotrain.hashing import canonical_json, digest_named

_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _host_bytes(t: torch.Tensor) -> memoryview:
    t = t.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_quantized:
        t = t.int_repr()
    t = t.resolve_conj().resolve_neg().to("cpu").contiguous().reshape(-1)
    raw = t.view(torch.uint8).numpy()
    if sys.byteorder != "little" and t.element_size() > 1:
        raw = t.numpy().byteswap().view("u1")
    return memoryview(raw)


def hash_tensor(h: Any, t: torch.Tensor) -> None:
    """Feed a tensor's dtype, shape and little-endian bytes into the hash `h`."""
    h.update(canonical_json([str(t.dtype).removeprefix("torch."), list(t.shape)]))
    h.update(_host_bytes(t))


def tensor_digest(t: torch.Tensor) -> str:
    h = blake3()
    hash_tensor(h, t)
    return h.hexdigest()


def value_digest(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return tensor_digest(value)
    return blake3(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()


def state_digests(state: dict[str, Any]) -> dict[str, Any]:
    """Per-entry digests in the state's own order, and their overall digest."""
    tensors = {name: value_digest(v) for name, v in state.items()}
    return {"overall": digest_named(tensors.items()), "tensors": tensors}


def model_state(model: torch.nn.Module) -> dict[str, Any]:
    return dict(model.state_dict(keep_vars=False))


def optimizer_state(optimizer: torch.optim.Optimizer, model: torch.nn.Module | None) -> dict:
    """Flatten optimizer state, naming each entry by its parameter's name where known."""
    names: dict[int, str] = {}
    if model is not None:
        names = {id(p): n for n, p in model.named_parameters()}
    index_names: dict[int, str] = {}
    i = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            index_names[i] = names.get(id(p), f"param{i}")
            i += 1
    sd = optimizer.state_dict()
    flat: dict[str, Any] = {}
    for idx, entries in sd["state"].items():
        for key, value in entries.items():
            flat[f"{index_names.get(idx, f'param{idx}')}.{key}"] = value
    groups = [{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]]
    flat["param_groups"] = json.loads(json.dumps(groups, default=repr))
    return flat


def save_state_file(state: dict[str, Any], path: Path) -> None:
    """Write tensors in the safetensors layout (readable with numpy alone, for comparisons)."""
    header: dict[str, Any] = {}
    blobs: list[memoryview] = []
    offset = 0
    for name, t in state.items():
        if not isinstance(t, torch.Tensor) or t.dtype not in _SAFETENSORS_DTYPES:
            continue
        data = _host_bytes(t)
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for blob in blobs:
            f.write(blob)
    tmp.replace(path)
