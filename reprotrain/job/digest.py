"""Canonical digests of tensors, model and optimizer state, and the saved final state file.

A tensor's digest covers its dtype, shape and bytes in little-endian order; it is taken one
tensor at a time (a GPU tensor is copied to the host alone), never of a copy of the whole state.

Two strengths (docs/architecture.md, "Digests"):

- the final state, outputs and everything a verdict rests on: blake3 (`state_digests`);
- the per-step trace, which only localises where two runs part: `step_digests`, exact and at
  memory speed. A host tensor gets xxh3-128 of its bytes (``xxh3:``); a CUDA tensor gets `sum64`
  computed on its device, so only 8 bytes per 32 KiB of tensor cross to the host (``sum64:``).
  Both are functions of the bits alone, so runs that are bit-identical always trace alike; a
  collision could only put the localised step later, never call a reproduced run diverged.
"""

from __future__ import annotations

import itertools
import json
import operator
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xxhash
from blake3 import blake3

from reprotrain.diffs import step_kind_of
from reprotrain.hashing import canonical_json, digest_named
from reprotrain.report import encode_event

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


# per-step digests ---------------------------------------------------------------------------

ROW = 4096  # sum64: int64 words per row (32 KiB); the host gets one word per row


def _splitmix64(start: int, n: int) -> np.ndarray:
    """n odd 64-bit constants, from splitmix64 at a fixed start: sum64's weights, everywhere alike."""
    with np.errstate(over="ignore"):
        z = (np.arange(start, start + n, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) | np.uint64(1)


_COLUMN = _splitmix64(0, ROW)  # W[c]: a word's weight within its row
_row_weights = _splitmix64(1 << 40, 1024)  # V[r]: a row's weight within its tensor; grows
_on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _row_weight(rows: int) -> np.ndarray:
    global _row_weights
    if rows > len(_row_weights):
        _row_weights = _splitmix64(1 << 40, max(rows, 2 * len(_row_weights)))
    return _row_weights[:rows]


def _flat_bytes(t: torch.Tensor) -> torch.Tensor:
    """A tensor's bytes as a flat uint8 tensor on its own device (dense, plain, contiguous)."""
    t = t.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_quantized:
        t = t.int_repr()
    return t.resolve_conj().resolve_neg().contiguous().reshape(-1).view(torch.uint8)


def device_checksums(tensors: list[torch.Tensor], *, budget: int = 256 << 20) -> list[int]:
    """sum64 of each tensor, computed with integer ops on the tensors' own (one) device.

    A tensor's bytes, zero-padded to whole rows of ROW little-endian int64 words x[r, c], give
    sum over r, c of x[r, c] * W[c] * V[r], mod 2**64, with W and V odd constants: exact, so a
    change of any one word always changes it, and the same bits give the same sum on any device
    and in any order of summation. On the device, a tensor's whole rows are read where they lie
    (copied only if not 8-byte aligned), `budget` bytes at a time; its last, partial row is
    padded in a copy of under 32 KiB; small pieces of several tensors are joined into one
    multiply and row sum. So the device needs at most about twice `budget` more, whatever the
    tensors' sizes; the host gets each row's sum and weighs the rows (numpy).
    """
    if not tensors:
        return []
    device = tensors[0].device
    if device not in _on_device:
        _on_device[device] = (
            torch.from_numpy(_COLUMN.view(np.int64)).to(device),
            torch.zeros(8 * ROW, dtype=torch.uint8, device=device),
        )
    column, zeros = _on_device[device]
    row_bytes = 8 * ROW
    step = max(row_bytes, budget // row_bytes * row_bytes)  # bytes of whole rows summed at once
    sums: list[torch.Tensor] = []  # row sums, on the device, in tensor order
    rows: list[int] = []
    pending: list[torch.Tensor] = []  # small (k, ROW) pieces, joined when they reach the budget
    size = 0

    def flush() -> None:
        nonlocal size
        if pending:
            words = torch.cat(pending) if len(pending) > 1 else pending[0]
            sums.append((words * column).sum(dim=1))
            pending.clear()
            size = 0

    def add(words: torch.Tensor) -> None:
        nonlocal size
        n = words.numel() * 8
        if n >= step // 2:  # large: alone, where it lies, after what waits (the order is kept)
            flush()
            sums.append((words * column).sum(dim=1))
            return
        if size + n > step:
            flush()
        pending.append(words)
        size += n

    for t in tensors:
        b = _flat_bytes(t)
        n = b.numel()
        full = n - n % row_bytes
        rows.append(max(1, -(-n // row_bytes)))
        aligned = b.data_ptr() % 8 == 0
        for start in range(0, full, step):
            piece = b[start : min(full, start + step)]
            add((piece if aligned else piece.clone()).view(torch.int64).view(-1, ROW))
        if n > full or n == 0:  # the last row, zero-padded (an empty tensor: one row of zeros)
            tail = torch.cat([b[full:], zeros[: row_bytes - (n - full)]])
            add(tail.view(torch.int64).view(1, ROW))
    flush()
    row_sums = torch.cat(sums).cpu().numpy().view(np.uint64)
    out, start = [], 0
    for r in rows:
        out.append(int((row_sums[start : start + r] * _row_weight(r)).sum(dtype=np.uint64)))
        start += r
    return out


def sum64_reference(data: bytes) -> int:
    """sum64 of raw bytes in plain Python: the definition `device_checksums` must match."""
    data += b"\0" * (-len(data) % 8)
    n = len(data) // 8
    weights = _row_weight(max(1, -(-n // ROW)))
    total = 0
    for i in range(n):
        x = int.from_bytes(data[8 * i : 8 * i + 8], "little")
        total += x * int(_COLUMN[i % ROW]) * int(weights[i // ROW])
    return total % (1 << 64)


_DTYPE_NAMES = {d: str(d).removeprefix("torch.") for d in _SAFETENSORS_DTYPES}
_AS_NUMPY = frozenset(_SAFETENSORS_DTYPES) - {torch.bfloat16}  # a numpy array has their bytes
_LITTLE = sys.byteorder == "little"
_seeds: dict[tuple[torch.dtype, torch.Size], int] = {}


def _header(t: torch.Tensor) -> bytes:
    name = _DTYPE_NAMES.get(t.dtype) or str(t.dtype).removeprefix("torch.")
    return f"{name}{list(t.shape)}".encode()


def _seed(t: torch.Tensor) -> int:
    """The tensor's dtype and shape as the seed of its xxh3: they count, as in the strong digest."""
    key = (t.dtype, t.shape)
    seed = _seeds.get(key)
    if seed is None:
        seed = _seeds[key] = xxhash.xxh3_64_intdigest(_header(t))
    return seed


def _plain_host(t: torch.Tensor) -> bool:
    """A host tensor whose own buffer holds its bytes as the digest takes them."""
    return (
        t.is_cpu
        and t.dtype in _AS_NUMPY
        and t.layout == torch.strided
        and t.is_contiguous()
        and not t.is_conj()
        and not t.is_neg()
        and (_LITTLE or t.element_size() == 1)
    )


def _xxh3(t: torch.Tensor) -> str:
    if _plain_host(t):  # the common case, without a copy: the tensor's own buffer
        return "xxh3:" + xxhash.xxh3_128_hexdigest(t.detach().numpy(), _seed(t))
    return "xxh3:" + xxhash.xxh3_128_hexdigest(_host_bytes(t), _seed(t))


def step_digests(state: dict[str, Any], *, on_device: bool = True) -> dict[str, Any]:
    """Per-entry per-step digests in the state's own order, and their overall digest.

    CUDA tensors are checksummed on their device (`on_device=False`: copied to the host and
    hashed there, as a host tensor is); other values are hashed as the final digests do.
    """
    tensors: dict[str, str] = {}
    on_gpu: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for name, v in state.items():
        if not isinstance(v, torch.Tensor):
            value = json.dumps(v, sort_keys=True, default=repr).encode()
            tensors[name] = "xxh3:" + xxhash.xxh3_128_hexdigest(value)
        elif on_device and v.is_cuda:
            on_gpu.setdefault(v.device, []).append((name, v))
            tensors[name] = ""  # keeps the state's order
        else:
            tensors[name] = _xxh3(v)
    for group in on_gpu.values():
        for (name, t), cs in zip(group, device_checksums([t for _, t in group]), strict=True):
            tensors[name] = "sum64:" + xxhash.xxh3_128_hexdigest(cs.to_bytes(8, "little"), _seed(t))
    return {"overall": f"{step_kind_of(tensors)}:{_overall(tensors)}", "tensors": tensors}


def _overall(tensors: dict[str, str]) -> str:
    """Of the named digests, whatever their order (as `hashing.digest_named`)."""
    return xxhash.xxh3_128_hexdigest(repr(sorted(tensors.items())).encode())  # str's repr: unambiguous


class ModelState:
    """`model.state_dict()` for the per-step digests, without its walk of every module each step.

    The walk is remembered while it provably gives what state_dict gives: no module has state-dict
    hooks or its own way of saving, the first walk matched state_dict tensor for tensor, and no
    parameter, buffer or submodule was added, removed, re-added (which moves it in state_dict's
    order) or replaced and no buffer made persistent or not since (checked every call: keys in
    order, set members, entries by identity). Otherwise, and from then on if a module saves its
    own way, state_dict is asked. Values are read afresh each call (`p.data = ...` is seen).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self._plan: list[tuple[str, dict[str, Any], str]] | None = None
        # what the walk saw, checked each call with C-level iteration (map): each dict's keys in
        # their order (state_dict's order), each set's members, and each entry still the object it was
        self._ordered: list[dict[str, Any]] = []
        self._lengths: list[int] = []
        self._keyed: list[dict[str, Any]] = []  # the dicts with keys (the lengths hold the others empty)
        self._order: list[Any] = []  # their keys, in order
        self._sets: list[set[str]] = []
        self._sizes: list[int] = []
        self._filled: list[set[str]] = []  # the sets with members (the sizes hold the others empty)
        self._members: list[frozenset[str]] = []
        self._dicts: list[dict[str, Any]] = []
        self._keys: list[str] = []
        self._values: list[Any] = []
        self._own_way = False
        self._fast: _Fast | None = None  # how the last call hashed the state, if from its memory

    def digests(self) -> dict[str, Any]:
        """`step_digests` of the state. Host tensors are hashed straight from numpy views of their
        memory, kept from the last call while the walk still holds (so every tensor is the same
        object) and every tensor has the same memory and layout (a view keeps its memory alive,
        so an address is never reused): then the state is checked and hashed with C-level
        iteration, the overall digest filled into a template, no Python loop per tensor."""
        fast = self._fast_now()
        return fast.digests() if fast is not None else self._step_digests()

    def event(self, step: int) -> tuple[str, str]:
        """The overall digest, and the `params` event of `step` as its line in the event stream
        (`report.encode_event`); on the fast path the line too is filled into a template."""
        fast = self._fast_now()
        if fast is not None:
            return fast.event(step)
        d = self._step_digests()
        return d["overall"], encode_event("params", {"step": int(step), **d})

    def _fast_now(self) -> _Fast | None:
        fast = self._fast
        return fast if fast is not None and self._unchanged() and fast.holds() else None

    def _step_digests(self) -> dict[str, Any]:
        state = self()
        self._fast = _Fast.of(state) if self._plan is not None else None
        return step_digests(state)

    def __call__(self) -> dict[str, Any]:
        if not self._own_way and (self._plan is None or not self._unchanged()):
            self._plan, self._fast = self._walk(), None
        if self._plan is None:
            return model_state(self.model)
        return {name: d[key] for name, d, key in self._plan}  # as state_dict, less its detach()

    def _unchanged(self) -> bool:
        return (
            list(map(len, self._ordered)) == self._lengths
            and list(itertools.chain.from_iterable(self._keyed)) == self._order
            and list(map(len, self._sets)) == self._sizes
            and all(map(operator.eq, self._filled, self._members))
            and all(map(operator.is_, map(dict.get, self._dicts, self._keys), self._values))
        )

    def _walk(self) -> list[tuple[str, dict[str, Any], str]] | None:
        base = torch.nn.Module
        plan: list[tuple[str, dict[str, Any], str]] = []
        ordered: list[dict[str, Any]] = []
        sets: list[set[str]] = []
        entries: list[tuple[dict[str, Any], str, Any]] = []
        for prefix, m in self.model.named_modules(remove_duplicate=False):
            kind = type(m)
            if (
                m._state_dict_hooks
                or m._state_dict_pre_hooks
                or kind.state_dict is not base.state_dict
                or kind._save_to_state_dict is not base._save_to_state_dict
                or kind.get_extra_state is not base.get_extra_state
            ):
                self._own_way = True
                return None
            dot = f"{prefix}." if prefix else ""
            ordered += [m._parameters, m._buffers, m._modules, m._state_dict_hooks, m._state_dict_pre_hooks]
            sets.append(m._non_persistent_buffers_set)
            for d in (m._parameters, m._buffers, m._modules):
                entries += [(d, k, v) for k, v in d.items()]
            plan += [(dot + k, m._parameters, k) for k, v in m._parameters.items() if v is not None]
            plan += [
                (dot + k, m._buffers, k)
                for k, v in m._buffers.items()
                if v is not None and k not in m._non_persistent_buffers_set
            ]
        sd = self.model.state_dict()
        ours = [(name, d[key]) for name, d, key in plan]
        if [n for n, _ in ours] != list(sd) or not all(_alias(t, sd[n]) for n, t in ours):
            self._own_way = True
            return None
        self._ordered, self._lengths = ordered, [len(d) for d in ordered]
        self._keyed = [d for d in ordered if d]
        self._order = list(itertools.chain.from_iterable(self._keyed))
        self._sets, self._sizes = sets, [len(x) for x in sets]
        self._filled = [x for x in sets if x]
        self._members = [frozenset(x) for x in self._filled]
        self._dicts = [d for d, _, _ in entries]
        self._keys = [k for _, k, _ in entries]
        self._values = [v for _, _, v in entries]
        return plan


class _Fast:
    """A state of plain host tensors as one call saw it: their numpy views and xxh3 seeds, and the
    template of `_overall` over their names (the repr of the sorted items, less the digests)."""

    def __init__(self, names: list[str], ts: list[torch.Tensor]) -> None:
        self.names, self.tensors = names, ts
        self.layout = self._layout()
        self.views = [t.detach().numpy() for t in ts]
        self.seeds = [_seed(t) for t in ts]
        self.order = sorted(range(len(names)), key=names.__getitem__)
        # repr(sorted(items)) with every digest left out: "[('a', 'xxh3:" + hex + "'), ('b', …"
        self.pieces = [("'), (" if i else "[(") + f"{names[j]!r}, 'xxh3:" for i, j in enumerate(self.order)]
        # the params event's "tensors" object, as json.dumps writes it, less the digests
        self.entries = [("{" if i == 0 else '",') + json.dumps(n) + ':"xxh3:' for i, n in enumerate(names)]

    @classmethod
    def of(cls, state: dict[str, Any]) -> _Fast | None:
        ts = list(state.values())
        return cls(list(state), ts) if ts and all(map(_is_plain_tensor, ts)) else None  # none: "mixed"

    def holds(self) -> bool:
        """The same tensors (the caller knows) still have the memory and layout the views have."""
        return self._layout() == self.layout

    def _layout(self) -> list[Any]:
        ts = self.tensors
        return list(itertools.chain(map(_PTR, ts), map(_STRIDE, ts), map(_SHAPE_DTYPE, ts), map(_NEG, ts)))

    def digests(self) -> dict[str, Any]:
        hexes = list(map(xxhash.xxh3_128_hexdigest, self.views, self.seeds))
        tensors = dict(zip(self.names, map(operator.add, itertools.repeat("xxh3:"), hexes), strict=True))
        return {"overall": self._overall(hexes), "tensors": tensors}

    def event(self, step: int) -> tuple[str, str]:
        hexes = list(map(xxhash.xxh3_128_hexdigest, self.views, self.seeds))
        overall = self._overall(hexes)
        tensors = "".join(itertools.chain.from_iterable(zip(self.entries, hexes, strict=True)))
        head = f'{{"kind":"params","step":{int(step)},"overall":"{overall}","tensors":'
        return overall, head + tensors + '"}}\n'

    def _overall(self, hexes: list[str]) -> str:
        listed = zip(self.pieces, map(hexes.__getitem__, self.order), strict=True)
        text = "".join(itertools.chain.from_iterable(listed)) + "')]"
        return "xxh3:" + xxhash.xxh3_128_hexdigest(text.encode())


def _is_plain_tensor(v: Any) -> bool:
    return isinstance(v, torch.Tensor) and _plain_host(v)


# what a numpy view of a tensor's memory rests on; `.data = ...` can change any
_PTR, _STRIDE, _SHAPE_DTYPE, _NEG = (
    torch.Tensor.data_ptr,
    torch.Tensor.stride,
    operator.attrgetter("shape", "dtype"),
    torch.Tensor.is_neg,
)


def _alias(a: torch.Tensor, b: Any) -> bool:
    return (
        isinstance(b, torch.Tensor)
        and a.dtype == b.dtype
        and a.shape == b.shape
        and a.stride() == b.stride()
        and a.device == b.device
        and (a.numel() == 0 or a.data_ptr() == b.data_ptr())
    )


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
