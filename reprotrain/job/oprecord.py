"""Two copies of a job, forked side by side, recorded op by op and compared as they run.

Each copy runs the job's `train(ctx)` under `OpRecorder`, a `TorchDispatchMode`: every op's
outputs (forward, backward and the optimizer's; views and uninitialised allocations skipped)
are copied and digested as the op returns, with the module path that called it (global module
hooks; in backward, the module whose forward made the autograd node), the user's source line and
the shapes. Each copy streams (op, module, digest) records to this process, which compares the
two streams in order. A copy keeps its last `RING` ops' outputs and waits whenever it is more
than `AHEAD` records past the comparison, so when the streams part at record n both copies still
hold n's outputs: they write them, with the ops just before, and exit; the report gives the max
abs/rel difference of each output. A copy stops at its bound (a logged step, or a number of
logged steps), so recording covers only the steps needed.

The copies fork from the job process before it applies its policy: each applies it itself (and
a CUDA job initialises CUDA only in the copies), so both start from the same state as the run.
"""

from __future__ import annotations

import os
import pickle
import selectors
import struct
import sys
import sysconfig
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from blake3 import blake3
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import reprotrain
from reprotrain.bisect import BisectReport, OpInfo, OutputDiff
from reprotrain.hashing import canonical_json
from reprotrain.job.checkpoints import tensor_delta
from reprotrain.job.digest import hash_tensor

RING = 128  # op outputs each copy keeps
AHEAD = 64  # records a copy may run past the last comparison before it waits
CONTEXT = 8  # agreeing ops shown before the first differing one
FLUSH = 32  # records sent in one frame
KEEP_BYTES = 32 << 20  # a side recorded alone keeps its first ops' outputs up to this size
_FRAME = struct.Struct("<I")
# ops whose outputs are uninitialised memory: never equal between copies, never a result
_UNINITIALISED = frozenset(
    {"empty", "empty_like", "empty_strided", "empty_permuted", "new_empty", "new_empty_strided", "resize_"}
)
_SKIP = _UNINITIALISED | {"detach", "lift_fresh", "alias", "_local_scalar_dense"}
_MODULE_KEY = "reprotrain_module"


@dataclass(frozen=True)
class Bound:
    """Where a copy stops: after the log of `until_step` (or a later one), or after `steps` logs."""

    until_step: int | None = None
    steps: int | None = None

    def reached(self, step: int, logs: int) -> bool:
        if self.until_step is not None and step >= self.until_step:
            return True
        return self.steps is not None and logs >= self.steps


class StopRecording(BaseException):
    """Raised from ctx.log once the copy has recorded the steps it was asked for."""


def _send(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_FRAME.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _recv(fd: int) -> Any:
    head = _read_exact(fd, _FRAME.size)
    if head is None:
        return None
    body = _read_exact(fd, _FRAME.unpack(head)[0])
    return None if body is None else pickle.loads(body)


def _leaves(x: Any) -> list[Any]:
    """The leaves of an op's arguments or outputs in pytree's order, without
    pytree's generic walk: an op's arguments are tensors, scalars and flat lists nearly always."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, tuple | list):
        out: list[Any] = []
        for v in x:
            if isinstance(v, torch.Tensor):
                out.append(v)
            elif isinstance(v, tuple | list | dict):
                out.extend(_leaves(v))
            else:
                out.append(v)
        return out
    if isinstance(x, dict):
        return _leaves(list(x.values()))
    return [x]


_HEADERS: dict[tuple, bytes] = {}


def _hash_copy(h: Any, t: torch.Tensor) -> None:
    """`digest.hash_tensor` of a tensor this recorder copied: contiguous, on the CPU, its own."""
    key = (t.dtype, t.shape)
    head = _HEADERS.get(key)
    if head is None:
        head = _HEADERS[key] = canonical_json([str(t.dtype).removeprefix("torch."), list(t.shape)])
    if t.layout != torch.strided or t.is_quantized or t.is_conj() or t.is_neg() or sys.byteorder != "little":
        hash_tensor(h, t)
        return
    h.update(head)
    h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))


def _shape(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return f"{str(v.dtype).removeprefix('torch.')}[{', '.join(map(str, v.shape))}]"
    return type(v).__name__


class OpRecorder(TorchDispatchMode):
    """Records one copy's ops: digests to the comparing process, outputs kept in a ring."""

    def __init__(self, out_fd: int, ctl_fd: int, dump: Path) -> None:
        super().__init__()
        self.out_fd, self.ctl_fd, self.dump = out_fd, ctl_fd, dump
        self.pid = os.getpid()
        self.seq = 0
        self.acked = 0
        self.pending: list[tuple] = []
        self.keys: dict[tuple, int] = {}
        self.ring: deque[tuple[int, tuple, list[Any], list[str]]] = deque(maxlen=RING)
        self.modules: list[str] = []
        self.names: dict[int, str] = {}
        self.model: torch.nn.Module | None = None
        self.in_optimizer = 0
        self.paused = 0
        self.internal: dict[Any, bool] = {}
        self.roots = tuple(
            os.path.dirname(p) + os.sep for p in (torch.__file__, reprotrain.__file__, sysconfig.__file__)
        )
        self._hooks: list[Any] = []

    # -- where an op came from ------------------------------------------------------------------
    def install(self) -> None:
        from torch.nn.modules import module as mod
        from torch.optim import optimizer as optim
        from torch.utils.data import dataloader

        inner = dataloader._BaseDataLoaderIter.__next__
        rec = self

        def __next__(it: Any) -> Any:
            rec.paused += 1
            try:
                batch = inner(it)
            finally:
                rec.paused -= 1
            rec.batch(batch)
            return batch

        dataloader._BaseDataLoaderIter.__next__ = __next__  # the copy is a throwaway process
        # a DataLoader worker forked from this copy must not hold its pipes: the comparing process
        # reads to the end of them
        os.register_at_fork(after_in_child=self._close_pipes)
        self._hooks = [
            mod.register_module_forward_pre_hook(self._enter),
            mod.register_module_forward_hook(self._leave, always_call=True),
            optim.register_optimizer_step_pre_hook(self._opt_enter),
            optim.register_optimizer_step_post_hook(self._opt_leave),
        ]

    def _close_pipes(self) -> None:
        for fd in (self.out_fd, self.ctl_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def uninstall(self) -> None:
        for h in self._hooks:
            h.remove()

    def _name(self, m: torch.nn.Module) -> str:
        name = self.names.get(id(m))
        if name is None and self.model is not None:
            self.names = {id(sub): n or type(self.model).__name__ for n, sub in self.model.named_modules()}
            name = self.names.get(id(m))
        return name if name is not None else type(m).__name__

    def _enter(self, m: torch.nn.Module, args: Any) -> None:
        if os.getpid() != self.pid:
            return
        stops = {id(t.grad_fn) for t in tree_leaves(args) if isinstance(t, torch.Tensor) and t.grad_fn}
        self.modules.append(self._name(m))
        m.__dict__.setdefault("_reprotrain_stops", []).append(stops)

    def _leave(self, m: torch.nn.Module, args: Any, out: Any) -> None:
        if os.getpid() != self.pid or not self.modules:
            return
        name = self.modules.pop()
        stacks = m.__dict__.get("_reprotrain_stops") or [set()]
        stops = stacks.pop()
        # name the autograd nodes this module's forward made, so its backward ops carry its path;
        # an inner module named its own first
        todo = [t.grad_fn for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.grad_fn]
        seen: set[int] = set()
        while todo:
            node = todo.pop()
            if node is None or id(node) in seen or id(node) in stops:
                continue
            seen.add(id(node))
            node.metadata.setdefault(_MODULE_KEY, name)
            todo.extend(n for n, _ in node.next_functions)

    def _opt_enter(self, opt: Any, args: Any, kwargs: Any) -> None:
        self.in_optimizer += 1

    def _opt_leave(self, opt: Any, args: Any, kwargs: Any) -> None:
        self.in_optimizer = max(0, self.in_optimizer - 1)

    def _source(self) -> str | None:
        f = sys._getframe(2)
        while f is not None:
            code = f.f_code
            inside = self.internal.get(code)
            if inside is None:
                name = code.co_filename
                inside = self.internal[code] = name.startswith(self.roots) or name.startswith("<")
            if not inside:
                return f"{self._rel(code.co_filename)}:{f.f_lineno}"
            f = f.f_back
        return None

    def _rel(self, filename: str) -> str:
        """A source file as the job's code names it: relative to its import root, or its name."""
        for root in sys.path:
            if root and filename.startswith(root.rstrip(os.sep) + os.sep):
                return filename[len(root.rstrip(os.sep)) + 1 :]
        return os.path.basename(filename)

    # -- recording ------------------------------------------------------------------------------
    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if self.paused or os.getpid() != self.pid:  # a DataLoader worker forked from this copy
            return out
        name = func._schema.name
        if func.is_view or name.split("::")[-1] in _SKIP or name.startswith("profiler::"):
            return out
        node = torch._C._current_autograd_node()
        if node is not None:
            phase, module, node_name = "backward", node.metadata.get(_MODULE_KEY), node.name()
        else:
            phase = "optimizer" if self.in_optimizer else ("forward" if self.modules else "other")
            module, node_name = (self.modules[-1] if self.modules else None), None
        inputs = [_shape(a) for a in _leaves((args, kwargs or {})) if isinstance(a, torch.Tensor)]
        self._add((name, phase, module, node_name, self._source(), tuple(inputs)), _leaves(out))
        return out

    def batch(self, batch: Any) -> None:
        """A batch as a DataLoader yields it. The ops inside the loader are not recorded: with
        worker processes, batches are unpickled in the order they arrive, which is timing."""
        self._add(("dataloader::batch", "other", None, None, self._source(), ()), tree_leaves(batch))

    def _add(self, meta: tuple, leaves: list[Any]) -> None:
        values = [v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else v for v in leaves]
        h = blake3()
        for v in values:
            if isinstance(v, torch.Tensor):
                _hash_copy(h, v)
            else:
                h.update(repr(v).encode())
        key = meta[:4]
        kid = self.keys.get(key)
        if kid is None:
            kid = self.keys[key] = len(self.keys)
            self.pending.append(("key", kid, key))
        self.ring.append((self.seq, meta, values, [_shape(v) for v in values]))
        self._record(("op", kid, h.digest(16)))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self.ring.append((self.seq, ("log", step), [], []))
        self._record(("log", int(step), blake3(canonical_json(metrics)).digest(16)))

    def _record(self, rec: tuple) -> None:
        self.pending.append(rec)
        self.seq += 1
        if len(self.pending) >= FLUSH:
            self.flush()
        while self.seq - self.acked > AHEAD:
            self.flush()
            self.obey(_recv(self.ctl_fd))

    def flush(self) -> None:
        if self.pending:
            _send(self.out_fd, self.pending)
            self.pending = []

    def obey(self, msg: Any) -> None:
        """A message from the comparing process: an ack, or "write record n's outputs and exit"."""
        if msg is None or msg[0] == "stop":
            os._exit(0)
        if msg[0] == "ack":
            self.acked = max(self.acked, msg[1])
            return
        n = msg[1]
        entries = [e for e in self.ring if n - 2 * CONTEXT <= e[0] <= n]
        dump = {
            "infos": [(seq, meta, shapes) for seq, meta, _, shapes in entries],
            "outputs": next((values for seq, _, values, _ in entries if seq == n), []),
        }
        tmp = self.dump.with_suffix(".partial")
        torch.save(dump, tmp)
        tmp.replace(self.dump)
        os._exit(0)

    def end(self, error: str | None) -> None:
        self.pending.append(("end", error))
        self.seq += 1
        self.flush()
        while True:
            self.obey(_recv(self.ctl_fd))


class _Kept:
    """A side recorded alone: every op's (seq, meta, shapes), and the outputs of the first ops up
    to KEEP_BYTES (where environments part, it is almost always early: the first kernel that
    differs, in the first forward pass)."""

    def __init__(self, budget: int) -> None:
        self.infos: list[tuple] = []
        self.outputs: dict[int, list[Any]] = {}
        self.budget, self.used, self.full = budget, 0, False

    def append(self, entry: tuple) -> None:
        seq, meta, values, shapes = entry
        self.infos.append((seq, meta, shapes))
        if self.full:
            return
        size = sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))
        if self.used + size > self.budget:
            self.full = True
            return
        self.used += size
        self.outputs[seq] = values


class StreamRecorder(OpRecorder):
    """Records one copy alone into a file, for a comparison elsewhere: a side of a bisect across
    environments. The same records as a compared copy, plus every op's source and shapes, and the
    outputs of the first ops (`_Kept`)."""

    def __init__(self, out: Path, keep_bytes: int = KEEP_BYTES) -> None:
        super().__init__(-1, -1, out)
        self.out = out
        self.records: list[tuple] = []
        self.ring = _Kept(keep_bytes)  # type: ignore[assignment]

    def _close_pipes(self) -> None:
        pass

    def _record(self, rec: tuple) -> None:
        self.records.append(rec)
        self.seq += 1

    def flush(self) -> None:
        self.pending = []  # the op keys are written at the end

    def end(self, error: str | None) -> None:
        self.records.append(("end", error))
        kept: _Kept = self.ring  # type: ignore[assignment]
        data = {
            "records": self.records,
            "keys": {kid: key for key, kid in self.keys.items()},
            "infos": kept.infos,
            "outputs": kept.outputs,
            "kept_bytes": kept.used,
        }
        tmp = self.out.with_suffix(".partial")
        torch.save(data, tmp)
        tmp.replace(self.out)


def record_one(work: Path, body: Callable[[str, OpRecorder, Bound], None], bound: Bound, cwd: Path,
               side: str, out: Path) -> dict[str, Any]:  # fmt: skip
    """Fork one copy that runs `body` under a `StreamRecorder` up to `bound`, into `out` (its
    logs and outputs under `work`); what it recorded: {"ops", "steps", "seconds", "error"}."""
    started = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _copy(side, work, cwd, body, bound, StreamRecorder(out))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    data = _load(out)
    if data is None:
        why = f"the copy's process ended without writing its recording (wait status {status})"
        return {"ops": 0, "steps": 0, "seconds": round(time.monotonic() - started, 3), "error": why}
    records = data["records"]
    return {
        "ops": sum(r[0] == "op" for r in records),
        "steps": sum(r[0] == "log" for r in records),
        "seconds": round(time.monotonic() - started, 3),
        "error": records[-1][1] if records and records[-1][0] == "end" else None,
    }


def compare_streams(path_a: Path, path_b: Path) -> BisectReport:
    """Two sides recorded alone (`record_one`, possibly on two machines) compared record by record:
    the first op where they part, its outputs' differences when both kept them, the ops before."""
    data = [_load(path_a), _load(path_b)]
    for name, d in zip("ab", data, strict=True):
        if d is None or not isinstance(d.get("records"), list):
            raise ValueError(f"side {name}'s recording cannot be read")
    sides = [
        _Side(name, 0, -1, -1, Path(), list(d["records"]), dict(d["keys"]), done=True)
        for name, d in zip("ab", data, strict=True)
    ]
    for s in sides:  # a recording cut short reads as a side that ended there
        if not s.records or s.records[-1][0] != "end":
            s.records.append(("end", "the recording ends without its end record"))
    walk = _Walk()
    found, step = walk.advance(*sides) or ("ended", walk.last_step)
    report = walk.report(found, step, *sides)
    if found == "op" and report.first is not None:
        seq = report.first.seq
        xs, ys = data[0]["outputs"].get(seq), data[1]["outputs"].get(seq)
        if xs is not None and ys is not None:
            report = report.model_copy(update={"outputs": _diff_values(xs, ys)})
        else:
            kept = min(d["kept_bytes"] for d in data if d is not None)
            note = (
                f"this op's outputs were not kept: a side keeps the outputs of its first ops up to "
                f"{KEEP_BYTES >> 20} MiB ({kept >> 20} MiB kept); their digests differ"
            )
            report = report.model_copy(update={"summary": f"{report.summary}; {note}"})
        window = [e for e in data[0]["infos"] if seq - 2 * CONTEXT <= e[0] <= seq]
        report = _with_context(report, window)
    return report


def recording_context(rec: OpRecorder, bound: Bound) -> type:
    """A `Context` whose log feeds the recorder and stops the copy at its bound."""
    from torch.utils._python_dispatch import _disable_current_modes

    from reprotrain.job.context import Context
    from reprotrain.report import encode_metrics

    class RecordingContext(Context):
        _logs = 0

        def track(
            self,
            model: torch.nn.Module,
            optimizer: torch.optim.Optimizer | None = None,
            scheduler: Any = None,
        ) -> None:
            super().track(model, optimizer, scheduler)
            rec.model = model

        def log(self, step: int, total: int | None = None, **metrics: Any) -> None:
            with _disable_current_modes():  # the digests a log takes are not the job's ops
                super().log(step, total, **metrics)
            self._logs += 1
            rec.log(step, encode_metrics(metrics))
            if bound.reached(int(step), self._logs):
                raise StopRecording

    return RecordingContext


def script_hook(rec: OpRecorder, bound: Bound) -> Callable[[int, dict[str, Any]], None]:
    """What `reprotrain.report.log` calls in a recorded script-mode copy."""
    logs = 0

    def hook(step: int, metrics: dict[str, Any]) -> None:
        nonlocal logs
        logs += 1
        rec.log(step, metrics)
        if bound.reached(int(step), logs):
            raise StopRecording

    return hook


@dataclass
class _Side:
    name: str
    pid: int
    out_fd: int
    ctl_fd: int
    dump: Path
    records: list[tuple]
    keys: dict[int, tuple]
    done: bool = False


def run_pair(
    work: Path,
    body: Callable[[str, OpRecorder, Bound], None],
    bound: Bound,
    cwd: Path,
) -> BisectReport:
    """Fork copies "a" and "b"; each runs `body(side, recorder, bound)` (which applies the policy
    and runs the job under the recorder, ending at the bound). Compare their streams as they come."""
    started = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    sides: list[_Side] = []
    for name in ("a", "b"):
        out_r, out_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        dump = work / f"{name}.dump"
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the copy
            os.close(out_r)
            os.close(ctl_w)
            for s in sides:
                os.close(s.out_fd)
                os.close(s.ctl_fd)
            code = 1
            try:
                _copy(name, work, cwd, body, bound, OpRecorder(out_w, ctl_r, dump))
                code = 0
            finally:
                os._exit(code)
        os.close(out_w)
        os.close(ctl_r)
        sides.append(_Side(name, pid, out_r, ctl_w, dump, [], {}))
    try:
        report = _compare(sides)
        for s in sides:  # let each copy run on to its next wait, where it reads the verdict
            while _recv(s.out_fd) is not None:
                pass
    finally:
        for s in sides:
            for fd in (s.out_fd, s.ctl_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass
            try:
                os.waitpid(s.pid, 0)
            except ChildProcessError:
                pass
    if report.found == "op" and report.first is not None:
        dumps = [_load(s.dump) for s in sides]
        if dumps[0] is not None and dumps[1] is not None:
            report = report.model_copy(
                update={"outputs": _diff_values(dumps[0]["outputs"], dumps[1]["outputs"])}
            )
        if dumps[0] is not None:
            report = _with_context(report, dumps[0]["infos"])
    return report.model_copy(update={"seconds": round(time.monotonic() - started, 3)})


def _copy(name: str, work: Path, cwd: Path, body: Callable, bound: Bound, rec: OpRecorder) -> None:
    """The body of one forked copy: its own logs and output directory (`work/name/outputs`), the
    job's working directory (files the job reads relative to it are there), then the job."""
    (work / name / "outputs").mkdir(parents=True, exist_ok=True)
    for fd, stream in ((1, "stdout"), (2, "stderr")):
        out = os.open(work / f"{name}.{stream}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, fd)
        os.close(out)
    os.chdir(cwd)
    error = None
    try:
        body(name, rec, bound)
    except StopRecording:
        pass
    except BaseException as e:  # noqa: BLE001 - the copy's failure is part of the report
        traceback.print_exc()
        error = f"{type(e).__name__}: {e}"
    sys.stdout.flush()
    sys.stderr.flush()
    rec.end(error)


class _Walk:
    """The two streams compared record by record, as far as both have come."""

    def __init__(self) -> None:
        self.i = self.ops = self.steps = 0
        self.last_step: int | None = None

    def advance(self, a: _Side, b: _Side) -> tuple[str, int | None] | None:
        """(what was found, its step) once the streams part or both end; None: more records needed."""
        while self.i < len(a.records) and self.i < len(b.records):
            ra, rb = a.records[self.i], b.records[self.i]
            found = _differ(ra, rb, a, b)
            if found is not None:
                return found, (self.last_step + 1) if self.last_step is not None else 0
            if ra[0] == "op":
                self.ops += 1
            elif ra[0] == "log":
                self.steps += 1
                self.last_step = ra[1]
            elif ra[0] == "end":
                return "none", self.last_step
            self.i += 1
        return None

    def report(self, found: str, step: int | None, a: _Side, b: _Side) -> BisectReport:
        return _report(found, self.i, step, self.ops, self.steps, a, b)


def _compare(sides: list[_Side]) -> BisectReport:
    a, b = sides
    sel = selectors.DefaultSelector()
    for s in sides:
        sel.register(s.out_fd, selectors.EVENT_READ, s)
    walk = _Walk()
    acked = 0
    while True:
        if (res := walk.advance(a, b)) is not None:
            found, step = res
            for s in sides:
                _tell(s, ("dump", walk.i) if found == "op" else ("stop",))
            return walk.report(found, step, a, b)
        i = walk.i
        if i - acked >= 8 or any(len(s.records) - acked > AHEAD for s in sides):
            acked = i
            for s in sides:
                _tell(s, ("ack", i))
        for key, _ in sel.select():
            s = key.data
            batch = _recv(s.out_fd)
            if batch is None:  # the copy died without ending: a crash, a signal
                sel.unregister(s.out_fd)
                s.records.append(("end", "the copy's process ended without finishing (a crash or a signal)"))
                continue
            for rec in batch:
                if rec[0] == "key":
                    s.keys[rec[1]] = rec[2]
                else:
                    s.records.append(rec)


def _tell(s: _Side, msg: tuple) -> None:
    try:
        _send(s.ctl_fd, msg)
    except OSError:  # the copy has gone already
        pass


def _differ(ra: tuple, rb: tuple, a: _Side, b: _Side) -> str | None:
    if ra[0] != rb[0]:
        return "ended" if "end" in (ra[0], rb[0]) else "sequence"
    if ra[0] == "op":
        if a.keys[ra[1]] != b.keys[rb[1]]:
            return "sequence"
        return "op" if ra[2] != rb[2] else None
    if ra[0] == "log":
        return "metrics" if ra != rb else None
    if ra[1] or rb[1]:  # both ended: an error on either side
        return "ended" if ra[1] != rb[1] else None
    return None


def _key_info(s: _Side, rec: tuple, seq: int, step: int | None) -> OpInfo | None:
    if rec[0] != "op":
        return None
    op, phase, module, node = s.keys[rec[1]]
    return OpInfo(seq=seq, step=step, op=op, phase=phase, module=module, node=node)


def _report(found: str, i: int, step: int | None, ops: int, steps: int, a: _Side, b: _Side) -> BisectReport:
    ra, rb = a.records[i], b.records[i]
    errors = {s.name: r[1] for s, r in ((a, ra), (b, rb)) if r[0] == "end" and r[1]}
    first, other = _key_info(a, ra, i, step), _key_info(b, rb, i, step)
    if found == "none":
        summary = f"no difference: the two copies agreed on all {ops} ops of {steps} logged steps"
        return BisectReport(
            found="none", summary=summary, ops_compared=ops, steps_compared=steps, errors=errors
        )
    where = f"in step {step}" if step is not None else "before the first logged step"
    if found == "op" and first is not None:
        summary = f"first differing op: {first.op} {where}" + (f" in {first.module}" if first.module else "")
    elif found == "sequence":
        what = [x.op if x else r[0] for x, r in ((first, ra), (None if other is None else other, rb))]
        summary = f"the copies ran different ops {where}: {what[0]} vs {what[1]}"
    elif found == "metrics":
        summary = (
            f"every op agreed, but the metrics logged for step {ra[1]} differ "
            "(computed outside torch ops, or the logged step numbers differ)"
        )
        step = ra[1]
    else:
        which = " and ".join(sorted(errors)) or ("a" if ra[0] == "end" else "b")
        ended = f"copy {which} ended {where}; the other went on"
        summary = f"copy {which} failed {where}" if errors else ended
    return BisectReport(
        found=found,  # type: ignore[arg-type]
        summary=summary,
        step=step,
        first=first,
        other=other if found == "sequence" else None,
        ops_compared=ops,
        steps_compared=steps,
        errors=errors,
    )


def _load(path: Path) -> dict[str, Any] | None:
    """A copy's dump or a side's recording: written by the job's process, so opened safely."""
    try:
        return torch.load(path, weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError):
        return None


def _with_context(report: BisectReport, entries: list[tuple]) -> BisectReport:
    """The first op with its source and shapes, and the ops just before it, from (seq, meta,
    shapes) entries around it."""
    if report.first is None:
        return report
    infos = {seq: (meta, shapes) for seq, meta, shapes in entries}
    step = report.step

    def info(seq: int) -> OpInfo | None:
        meta, shapes = infos[seq]
        if meta[0] == "log":
            return None
        op, phase, module, node, source, inputs = meta
        return OpInfo(
            seq=seq, step=step, op=op, phase=phase, module=module, node=node,
            source=source, inputs=list(inputs), outputs=list(shapes),
        )  # fmt: skip

    first = info(report.first.seq) if report.first.seq in infos else report.first
    before = [o for seq in sorted(infos) if seq < report.first.seq and (o := info(seq)) is not None]
    # the steps of ops before a log in the window belong to the log's step, not this one
    logs = [seq for seq in infos if infos[seq][0][0] == "log" and seq < report.first.seq]
    if logs:
        cut = max(logs)
        prior = infos[cut][0][1]
        before = [o.model_copy(update={"step": prior}) if o.seq < cut else o for o in before]
    return report.model_copy(update={"first": first, "before": before[-CONTEXT:]})


def _diff_values(xs: list[Any], ys: list[Any]) -> list[OutputDiff]:
    out = []
    for i, (x, y) in enumerate(zip(xs, ys, strict=False)):
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            if x != y:
                out.append(OutputDiff(index=i, dtype=type(x).__name__, shape=[], differing=1, total=1))
            continue
        out.append(_tensor_diff(i, x, y))
    return out


def _tensor_diff(i: int, x: torch.Tensor, y: torch.Tensor) -> OutputDiff:
    dtype, n = str(x.dtype).removeprefix("torch."), x.numel()
    if x.shape != y.shape or x.dtype != y.dtype:
        note = f"copy b's output is {_shape(y)}"
        return OutputDiff(index=i, dtype=dtype, shape=list(x.shape), differing=n, total=n, note=note)
    bits_x = x.contiguous().reshape(-1).view(torch.uint8).reshape(n, -1) if n else x
    bits_y = y.contiguous().reshape(-1).view(torch.uint8).reshape(n, -1) if n else y
    differing = int((bits_x != bits_y).any(dim=1).sum()) if n else 0
    delta = tensor_delta(x, y) if n else {}
    return OutputDiff(
        index=i, dtype=dtype, shape=list(x.shape), differing=differing, total=n,
        max_abs=delta.get("max_abs"), max_rel=delta.get("max_rel"),
    )  # fmt: skip


if __name__ == "__main__":  # the worker's bounded child: compare two sides' recordings
    _report_out = compare_streams(Path(sys.argv[1]), Path(sys.argv[2]))
    sys.stdout.write(_report_out.model_dump_json())
