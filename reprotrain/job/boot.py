"""Interpreter-start hook for every Python process a script-mode job starts.

The job's ``sitecustomize`` calls `boot()`: Python's RNG is seeded at once; numpy and torch
are seeded and configured the moment the script imports them (an import hook), so a process
that never imports torch does not pay for loading it. Any other ``sitecustomize`` on the path
still runs after ours.
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from reprotrain.policy import Knobs
from reprotrain.wire import JobEnv


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a hook right after a named top-level module finishes importing."""

    def __init__(self, hooks: dict[str, Callable[[ModuleType], None]]) -> None:
        self.hooks = hooks

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        hook = self.hooks.get(name)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _HookedLoader(spec.loader, hook)
        return spec


class _HookedLoader(importlib.abc.Loader):
    def __init__(self, inner: Any, hook: Callable[[ModuleType], None]) -> None:
        self.inner = inner
        self.hook = hook

    def create_module(self, spec: Any) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        self.hook(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def boot(here: str) -> None:
    raw = os.environ.get(JobEnv.KNOBS)
    if raw:
        config = json.loads(raw)
        install(Knobs.model_validate(config["knobs"]), config["seed"])
    _chain_sitecustomize(os.path.dirname(os.path.abspath(here)))


def install(knobs: Knobs, seed: int | None) -> None:
    from reprotrain.job import apply

    apply.apply_env(knobs)
    seeding = knobs.seed_rngs and seed is not None
    if seeding:
        apply.seed_python(seed)  # type: ignore[arg-type]

    def on_numpy(_: ModuleType) -> None:
        if seeding:
            apply.seed_numpy(seed)  # type: ignore[arg-type]

    def on_torch(torch: ModuleType) -> None:
        apply.apply_torch(knobs, seed)
        atexit.register(_report_seed, torch)
        if knobs.deterministic_algorithms == "warn":
            from reprotrain.report import _default_writer

            writer = _default_writer()
            if writer is not None:
                apply.record_nondeterministic_warnings(
                    lambda op, msg: writer.write("nondeterministic", op=op, message=msg)
                )

    hooks: dict[str, Callable[[ModuleType], None]] = {"numpy": on_numpy, "torch": on_torch}
    for name, hook in list(hooks.items()):
        if name in sys.modules:  # already imported (unlikely at interpreter start)
            hook(sys.modules[name])
            del hooks[name]
    sys.meta_path.insert(0, _AfterImport(hooks))


def _report_seed(torch: Any) -> None:
    """At exit, the torch seed this process ended with, as a `torch_seed` event: a script that
    seeds torch itself (from its own flag, or a clock) is seen behind a shell too. Not from a
    multiprocessing child (a DataLoader worker seeds itself from its parent's generator)."""
    import multiprocessing

    from reprotrain.report import _default_writer

    writer = _default_writer()
    if writer is not None and multiprocessing.parent_process() is None:
        writer.write("torch_seed", seed=int(torch.initial_seed()))


def _chain_sitecustomize(ours: str) -> None:
    """Run the sitecustomize ours shadows, if there is one further down the path."""
    rest = [p for p in sys.path if os.path.abspath(p or ".") != ours]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
