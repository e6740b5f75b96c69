"""Per-step digests: sum64 against its plain-Python definition, xxh3 on host tensors, kinds."""

from __future__ import annotations

import pytest
import torch

from reprotrain.job.digest import (
    ROW,
    ModelState,
    _flat_bytes,
    _host_bytes,
    device_checksums,
    model_state,
    state_digests,
    step_digests,
    sum64_reference,
)
from reprotrain.report import encode_event

TENSORS = {
    "float32 odd length": lambda: torch.randn(5),
    "float64 matrix": lambda: torch.randn(3, 7, dtype=torch.float64),
    "uint8 over one row": lambda: torch.randint(0, 255, (8 * ROW + 13,), dtype=torch.uint8),
    "bfloat16": lambda: torch.randn(9000).bfloat16(),
    "bool scalar": lambda: torch.tensor(True),
    "int64 three rows": lambda: torch.randint(-(2**62), 2**62, (3 * ROW,), dtype=torch.int64),
    "transposed": lambda: torch.randn(40, 30).t(),
    "empty": lambda: torch.zeros(0),
    "sliced, not 8-byte aligned": lambda: torch.randn(3 * ROW + 10)[3:],
    "uint8 at an odd offset": lambda: torch.randint(0, 255, (5 * 8 * ROW + 3,), dtype=torch.uint8)[1:],
    "whole rows from a row's offset": lambda: torch.randn(5 * 2 * ROW)[2 * ROW :],
}


@pytest.mark.parametrize("budget", [256 << 20, 8 * ROW, 3 * 8 * ROW])
def test_sum64_is_its_definition(budget: int) -> None:
    """device_checksums (torch integer ops, here on the CPU) equals sum64 computed word by word
    in Python, mod 2**64, for every dtype and size, however the tensors are batched."""
    torch.manual_seed(0)
    ts = [make() for make in TENSORS.values()]
    assert device_checksums(ts, budget=budget) == [sum64_reference(bytes(_flat_bytes(t).numpy())) for t in ts]


def test_sum64_changes_with_any_one_word() -> None:
    """Changing one element's last bit, or swapping two elements, changes the checksum."""
    torch.manual_seed(1)
    t = torch.randn(3 * ROW + 5)
    before = device_checksums([t])[0]
    for i in (0, ROW - 1, ROW, 2 * ROW + 7, t.numel() - 1):
        u = t.clone()
        u[i] = torch.nextafter(u[i], torch.tensor(float("inf")))
        assert device_checksums([u])[0] != before, i
    u = t.clone()
    u[[3, ROW + 3]] = u[[ROW + 3, 3]]
    assert device_checksums([u])[0] != before


def test_host_fast_path_hashes_the_same_bytes() -> None:
    """A contiguous host tensor hashed from its own buffer gets the digest its copied bytes
    get: views, conjugates, bf16, parameters that require grad all hash by their values."""
    torch.manual_seed(2)
    p = torch.nn.Parameter(torch.randn(4, 4))
    dense = torch.randn(6, 5)
    state = {"p": p, "t": dense.t(), "bf": dense.bfloat16(), "c": torch.randn(3, dtype=torch.cfloat).conj()}
    copies = {
        k: torch.frombuffer(bytearray(_host_bytes(v)), dtype=v.dtype).reshape(v.shape)
        for k, v in state.items()
    }
    got, want = step_digests(state)["tensors"], step_digests(copies)["tensors"]
    assert got == want
    assert all(d.startswith("xxh3:") for d in got.values())


def test_step_digests_localise_and_have_a_kind() -> None:
    """One changed tensor changes its own digest and the overall one; dtype and shape count;
    the overall digest says its kind; the final (strong) digests are blake3, as before."""
    torch.manual_seed(3)
    state = {"a": torch.randn(10), "b": torch.randn(2, 5), "n": 3}
    base = step_digests(state)
    assert base["overall"].startswith("xxh3:") and list(base["tensors"]) == ["a", "b", "n"]
    changed = step_digests(state | {"b": state["b"] + 1})
    assert changed["tensors"]["a"] == base["tensors"]["a"]
    assert changed["tensors"]["b"] != base["tensors"]["b"] and changed["overall"] != base["overall"]
    reshaped = step_digests(state | {"b": state["b"].reshape(5, 2)})
    assert reshaped["tensors"]["b"] != base["tensors"]["b"]
    assert step_digests(state, on_device=False) == base  # host tensors: the same either way
    assert ":" not in state_digests(state)["overall"] and len(state_digests(state)["overall"]) == 64


class Counter(torch.nn.Module):
    """Replaces its buffer each forward (a new tensor object), and keeps one out of its state."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        self.register_buffer("seen", torch.zeros(()))
        self.register_buffer("scratch", torch.zeros(2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = self.seen + 1
        return self.lin(x)


def _same_as_state_dict(model: torch.nn.Module, reader: ModelState, step: int = 7) -> None:
    want = step_digests(model_state(model))
    assert list(reader()) == list(model.state_dict())
    assert reader.digests() == want
    assert reader.event(step) == (want["overall"], encode_event("params", {"step": step, **want}))


def test_model_state_follows_every_change_to_the_model() -> None:
    """ModelState gives what state_dict gives, step after step, through in-place updates,
    replaced buffers, `p.data = ...`, a transposed view of the same memory, added and removed
    submodules, a shared submodule, and a state-dict hook added later (then state_dict decides)."""
    torch.manual_seed(4)
    model = torch.nn.Sequential(Counter(), torch.nn.BatchNorm1d(3))
    reader = ModelState(model)
    _same_as_state_dict(model, reader)
    for _ in range(2):
        model(torch.randn(4, 3)).sum().backward()
        with torch.no_grad():
            model[0].lin.weight.add_(1)
        _same_as_state_dict(model, reader)
    w = model[0].lin.weight
    w.data = torch.randn(3, 3)  # same Parameter object, other memory
    _same_as_state_dict(model, reader)
    w.data = w.data.t()  # same memory, other layout
    _same_as_state_dict(model, reader)
    model.append(torch.nn.Linear(3, 2))
    _same_as_state_dict(model, reader)
    model.append(model[2])  # one module under two names
    _same_as_state_dict(model, reader)
    del model[3]
    _same_as_state_dict(model, reader)

    def drop(module: torch.nn.Module, sd: dict, prefix: str, local: dict) -> None:
        sd.pop(prefix + "running_var")

    model[1].register_state_dict_post_hook(drop)
    _same_as_state_dict(model, reader)
    assert "1.running_var" not in reader()


def test_model_state_sees_changes_that_keep_every_count() -> None:
    """A parameter deleted and set again (same object, now last in state_dict's order), and a
    buffer made persistent while another is made non-persistent (the same number of each)."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 3))
    model[0].register_buffer("a", torch.zeros(2))
    model[0].register_buffer("b", torch.ones(2), persistent=False)
    reader = ModelState(model)
    _same_as_state_dict(model, reader)
    w = model[0].weight
    del model[0].weight
    model[0].weight = w
    assert list(model.state_dict())[:2] == ["0.bias", "0.weight"]
    _same_as_state_dict(model, reader)
    model[0]._non_persistent_buffers_set.discard("b")
    model[0]._non_persistent_buffers_set.add("a")
    _same_as_state_dict(model, reader)
    assert "0.b" in reader() and "0.a" not in reader()


def test_model_state_sees_state_move_between_modules() -> None:
    """A buffer moved from one module to another, and a buffer made non-persistent in a module
    whose set of them was empty, beside one whose set is not (only its size shows the change)."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[0].register_buffer("x", torch.zeros(2))
    model[0].register_buffer("y", torch.ones(2), persistent=False)
    model[1].register_buffer("y", torch.full((2,), 2.0))
    reader = ModelState(model)
    _same_as_state_dict(model, reader)
    x = model[0].x
    del model[0].x
    model[1].register_buffer("x", x)
    _same_as_state_dict(model, reader)
    assert "1.x" in reader() and "0.x" not in reader()
    model[1]._non_persistent_buffers_set.add("y")
    _same_as_state_dict(model, reader)
    assert "1.y" not in reader()


def test_model_state_of_a_module_that_saves_its_own_way() -> None:
    """A module with its own extra state is read through state_dict itself."""

    class Extra(torch.nn.Linear):
        def get_extra_state(self) -> dict:
            return {"calls": 3}

        def set_extra_state(self, state: dict) -> None:
            pass

    model = torch.nn.Sequential(Extra(2, 2))
    reader = ModelState(model)
    _same_as_state_dict(model, reader)
    assert "0._extra_state" in reader()


def test_model_state_of_names_that_need_quoting() -> None:
    """The templates of the fast path quote names as repr and json.dumps do: quotes, backslashes,
    non-ASCII, and names whose sorted order is not the state's order."""
    model = torch.nn.Module()
    for name in ["z", "it's", 'say "hi"', "back\\slash", "naïve", "A"]:
        model.add_module(name, torch.nn.Linear(2, 2))
    reader = ModelState(model)
    for step in range(3):
        _same_as_state_dict(model, reader, step)
        with torch.no_grad():
            model.get_submodule("it's").weight.add_(1)
    empty = ModelState(torch.nn.ReLU())
    for _ in range(2):
        _same_as_state_dict(torch.nn.ReLU(), empty)
