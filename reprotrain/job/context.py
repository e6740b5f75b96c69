"""`Context`: what a function-mode job's `train(ctx)` gets from reprotrain."""

from __future__ import annotations

import random
import struct
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from blake3 import blake3
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from reprotrain.diffs import CHAIN
from reprotrain.hashing import digest_bytes
from reprotrain.job.digest import ModelState, model_state, optimizer_state, state_digests
from reprotrain.report import EventWriter, encode_metrics, progress_total


def derive_seed(seed: int, *labels: object) -> int:
    """A 63-bit seed derived from the job seed and labels: stable, independent streams."""
    data = repr((seed, *labels)).encode()
    return int.from_bytes(bytes.fromhex(digest_bytes(data))[:8], "little") >> 1


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn from PyTorch's reproducibility notes."""
    import numpy as np

    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def _pack_indices(batch: Any) -> bytes:
    try:
        packed = struct.pack(f"<{len(batch)}q", *(int(i) for i in batch))
    except (TypeError, ValueError, struct.error):
        packed = repr(batch).encode()
    return struct.pack("<Q", len(packed)) + packed


class _RecordingBatchSampler:
    """Wraps a batch sampler; queues each sampled batch's indices for the loader to consume."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.pending: deque[bytes] = deque()

    def __iter__(self) -> Iterator[list[Any]]:
        for batch in self.inner:
            self.pending.append(_pack_indices(batch))
            yield batch

    def __len__(self) -> int:
        return len(self.inner)


class _TracedDataLoader(DataLoader):
    """Chains a batch's indices into the data-order digest when the batch is delivered.

    Worker processes prefetch, so the sampler runs ahead of training; batches arrive in sampler
    order (in_order), so the digest at a logged step covers exactly the batches trained on.

    With checkpoints on, asking for the next batch is a step boundary (reprotrain/job/resume.py):
    the loader knows its position in the epoch and the random states its epoch started from.
    """

    def __init__(
        self, *args: Any, ctx: Context, recorder: _RecordingBatchSampler, index: int, **kw: Any
    ) -> None:
        super().__init__(*args, batch_sampler=recorder, **kw)
        self._ctx = ctx
        self._recorder = recorder
        self._index = index  # among the job's ctx.dataloader loaders, in the order it made them

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        ck, source = self._ctx._checkpointer, ("loader", self._index)
        saved = ck.resumes(source) if ck is not None else None
        if saved is not None:  # the random states this epoch started from, as the first attempt had them
            torch.set_rng_state(saved["pre"]["torch"])
            if self.generator is not None and saved["pre"]["generator"] is not None:
                self.generator.set_state(saved["pre"]["generator"])
        pre = {
            "torch": torch.get_rng_state(),
            "generator": self.generator.get_state() if self.generator is not None else None,
        }
        self._recorder.pending.clear()
        position = 0
        batches = super().__iter__()
        if saved is not None:
            for _ in range(int(saved["position"])):  # done before the checkpoint: loaded, not trained on
                if next(batches, _END) is _END:
                    break
                if self._recorder.pending:
                    self._recorder.pending.popleft()
                position += 1
            ck.restore()  # type: ignore[union-attr]
        self._ctx._sources.append(source)
        try:
            for batch in batches:
                if self._recorder.pending:
                    self._ctx._record_batch(self._recorder.pending.popleft())
                position += 1
                yield batch
                if ck is not None:
                    ck.boundary(source, position, pre)
        finally:
            self._ctx._sources.remove(source)


_END = object()


class Context:
    """Seed, params, device, seeded helpers, metric trace, tracked state and artifacts of a job."""

    def __init__(
        self,
        *,
        seed: int | None,
        params: dict[str, Any],
        device: torch.device,
        workspace: Path,
        inputs: dict[str, Path],
        events: EventWriter,
        digest_every: int,
        seed_dataloader: bool,
        job_dir: Path | None = None,
        resume: Path | None = None,
    ) -> None:
        self.seed = seed
        self.params = params
        self.device = device
        self.workspace = workspace
        self.output_dir = workspace / "outputs"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.inputs = inputs
        self._events = events
        self._digest_every = digest_every
        self._seed_dataloader = seed_dataloader
        self._generators = 0
        self._log_count = 0
        self._data = blake3()
        self._batches = 0
        self.model: torch.nn.Module | None = None
        self._model_state: ModelState | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.last_metrics: dict[str, Any] = {}
        self.state: dict[str, Any] = {}  # the job's own values a checkpoint keeps (best loss, …)
        self.resumed: dict[str, Any] | None = None  # set once a resumed attempt is at its checkpoint
        self._job_dir, self._resume = job_dir, resume
        self._checkpointer: Any = None
        self._schedulers: list[Any] = []
        self._made_generators: list[torch.Generator] = []
        self._loaders = 0
        self._sources: list[tuple[str, int]] = []  # the step sources iterating now, innermost last
        self._epoch = 0
        self._last_step: int | None = None
        self._chain: bytes | None = None  # with checkpoints: the data-order digest as a hash chain

    def generator(self, device: str | torch.device = "cpu") -> torch.Generator:
        """A torch.Generator seeded from the job seed; each call gets its own stream."""
        g = torch.Generator(device=device)
        if self.seed is None:
            g.seed()
        else:
            g.manual_seed(derive_seed(self.seed, "generator", self._generators))
        self._generators += 1
        self._made_generators.append(g)
        return g

    def dataloader(self, dataset: Any, **kwargs: Any) -> DataLoader:
        """A DataLoader seeded as PyTorch's notes show, recording each batch's sample indices."""
        if self._seed_dataloader:
            kwargs.setdefault("generator", self.generator())
            kwargs["worker_init_fn"] = _chain(seed_worker, kwargs.get("worker_init_fn"))
        if isinstance(dataset, torch.utils.data.IterableDataset):
            return DataLoader(dataset, **kwargs)
        batch_sampler = kwargs.pop("batch_sampler", None)
        if batch_sampler is None and kwargs.get("batch_size", 1) is not None:
            batch_sampler = self._batch_sampler(dataset, kwargs)
        if batch_sampler is None:
            return DataLoader(dataset, **kwargs)
        recorder = _RecordingBatchSampler(batch_sampler)
        self._loaders += 1
        return _TracedDataLoader(dataset, ctx=self, recorder=recorder, index=self._loaders - 1, **kwargs)

    def _batch_sampler(self, dataset: Any, kwargs: dict[str, Any]) -> BatchSampler:
        shuffle = kwargs.pop("shuffle", False)
        sampler = kwargs.pop("sampler", None)
        if sampler is None:
            generator = kwargs.get("generator")
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        return BatchSampler(sampler, kwargs.pop("batch_size", 1), kwargs.pop("drop_last", False))

    def _record_batch(self, packed: bytes) -> None:
        if self._chain is not None:  # a chain's state is 32 bytes a checkpoint can hold
            self._chain = blake3(self._chain + packed).digest()
        else:
            self._data.update(packed)
        self._batches += 1

    def _data_digest(self) -> str | None:
        if not self._batches:
            return None
        if self._chain is not None:  # another form than the plain digest, marked: never compared with it
            return CHAIN + self._chain.hex()
        return self._data.hexdigest()

    _total_steps: int | None = None

    def track(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None
    ) -> None:
        """Name the model (and optimizer) whose state is digested along the way and at the end, and
        the LR scheduler(s) a checkpoint keeps."""
        self.model = model
        self._model_state = ModelState(model)
        self.optimizer = optimizer
        if scheduler is not None:
            self._schedulers = list(scheduler) if isinstance(scheduler, list | tuple) else [scheduler]

    def checkpoint_every(self, logs: int) -> None:
        """Checkpoint at the step boundary after every `logs`-th log, so a run that loses its
        worker resumes from the last one, bit for bit. Call it once the model, optimizer,
        schedulers and loaders exist and before the loop; take epochs from `ctx.epochs` and steps
        from `ctx.dataloader` loaders or `ctx.steps`, and count steps with `ctx.step`."""
        from reprotrain.job.resume import Checkpointer

        if self._job_dir is None:  # a recorded copy (bisect, pre-flight): nothing to resume
            return
        self._checkpointer = Checkpointer(self, logs, self._job_dir, self.workspace, self._resume)
        self._chain = bytes.fromhex(self._data.hexdigest()) if self._batches else b""

    def epochs(self, n: int) -> Iterator[int]:
        """range(n), from the epoch a resumed run's checkpoint was taken in."""
        start = self._checkpointer.epoch if self._checkpointer is not None else 0
        for epoch in range(start, n):
            self._epoch = epoch
            yield epoch

    def steps(self, n: int) -> Iterator[int]:
        """range(n) as a step source: asking for the next step is a step boundary, and a resumed
        run starts after its checkpoint's step."""
        ck, source = self._checkpointer, ("steps", 0)
        saved = ck.resumes(source) if ck is not None else None
        start = int(saved["position"]) if saved is not None else 0
        if saved is not None:
            ck.restore()
        self._sources.append(source)
        try:
            for step in range(start, n):
                yield step
                if ck is not None:
                    ck.boundary(source, step + 1, None)
        finally:
            self._sources.remove(source)

    @property
    def step(self) -> int:
        """How many steps were logged so far (a resumed run counts on from its checkpoint)."""
        return self._log_count

    def _counters(self) -> dict[str, Any]:
        return {
            "log_count": self._log_count, "batches": self._batches, "chain": self._chain,
            "generators": self._generators, "last_metrics": dict(self.last_metrics),
            "total_steps": self._total_steps, "last_step": self._last_step,
        }  # fmt: skip

    def _restore_counters(self, c: dict[str, Any]) -> None:
        self._log_count, self._batches, self._chain = c["log_count"], c["batches"], c["chain"]
        self._generators, self._last_step = c["generators"], c["last_step"]
        self.last_metrics = dict(c["last_metrics"])
        self._total_steps = c["total_steps"]

    @property
    def total_steps(self) -> int | None:
        return self._total_steps

    @total_steps.setter
    def total_steps(self, n: int | None) -> None:
        """How many steps the job will log: `submit --wait` shows a bar, percent and ETA from it."""
        self._total_steps = progress_total(n)
        self._events.write("progress", total=self._total_steps)

    def log(self, step: int, total: int | None = None, **metrics: Any) -> None:
        """Record metrics for a step; every `digest_every`-th call also digests the model's state
        (`step_digests`: fast and exact; the final state gets the strong digest).
        `total` (not a metric) is how many steps there will be, as `total_steps` sets it."""
        if total is not None and total != getattr(self, "_total_steps", None):
            self.total_steps = total
        encoded = encode_metrics(metrics)
        self.last_metrics.update(encoded)
        params, events = None, []
        if self._model_state is not None and self._log_count % self._digest_every == 0:
            params, line = self._model_state.event(int(step))
            events.append(line)
        data = self._data_digest()
        events.append(("metric", {"step": int(step), "metrics": encoded, "data": data, "params": params}))
        self._events.write_many(events)
        self._log_count += 1
        self._last_step = int(step)
        if self._checkpointer is not None:
            self._checkpointer.logged()
            if not self._sources:
                self._checkpointer.no_boundary()

    def save(self, name: str, obj: Any) -> Path:
        """torch.save `obj` under output_dir/name, written whole or not at all."""
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"artifact name must be a relative path inside output_dir: {name!r}")
        path = self.output_dir.joinpath(*rel.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        torch.save(obj, tmp)
        tmp.replace(path)
        return path

    def final_state_digests(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.model is not None:
            out["model"] = state_digests(model_state(self.model))
        if self.optimizer is not None:
            out["optimizer"] = state_digests(optimizer_state(self.optimizer, self.model))
        return out


def _chain(first: Callable[[int], None], second: Callable[[int], None] | None) -> Callable[[int], None]:
    if second is None:
        return first

    def both(worker_id: int) -> None:
        first(worker_id)
        second(worker_id)

    return both
