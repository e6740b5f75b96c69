"""Checkpoints a function-mode job takes as it runs, and the exact resume from one.

A checkpoint is taken at a *step boundary*: when the job asks a step source for its next step (the
next batch of a `ctx.dataloader` loader, or the next number of `ctx.steps`) after a log that made
one due (`ctx.checkpoint_every(n)`: every n-th log). At that moment the step before it is done,
whatever the loop body did after `ctx.log` included. The checkpoint holds what a run needs to go
on bit for bit from there: the tracked model, optimizer and LR schedulers, `ctx.state`, every RNG
(python, numpy, torch CPU and CUDA, each generator `ctx.generator` made), each loader's position
and the generator states its epoch started from, the context's counters and data-order digest,
and the job's events, stdout, stderr and working directory so far.

A resumed attempt runs the job's code from the start: what it does before its step source is
first asked for a step (building the model, the loaders) is what the first attempt did too. There
the source skips ahead: a loader replays the batches of its epoch that were done (its workers load
them again, so their own random state is what it was, and nothing is trained on them), then every
state above is put back and the logs and working directory are replaced by the checkpoint's.

On disk: a checkpoint directory as `reprotrain.checkpoint.write` lays it out, with `state.pt`.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

from reprotrain.checkpoint import FORMAT, WORK, copy_tree, logs_back, write
from reprotrain.wire import JobFiles

STATE = "state.pt"


def rng_states(ctx: Any) -> dict[str, Any]:
    import numpy as np
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "generators": [g.get_state() for g in ctx._made_generators],
    }


def set_rng_states(ctx: Any, rng: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None:
        torch.cuda.set_rng_state_all(rng["cuda"])
    if len(rng["generators"]) != len(ctx._made_generators):
        raise RuntimeError(
            f"cannot resume: the checkpoint has {len(rng['generators'])} ctx.generator streams, this "
            f"run made {len(ctx._made_generators)} before its first step (the job's code changed?)"
        )
    for g, state in zip(ctx._made_generators, rng["generators"], strict=True):
        g.set_state(state)


class Checkpointer:
    """Takes a job's checkpoints and, for a resumed attempt, puts one back at its step boundary."""

    def __init__(self, ctx: Any, every: int, job_dir: Path, workspace: Path, resume: Path | None) -> None:
        if every < 1:
            raise ValueError(f"checkpoint_every needs a positive number of logs, got {every}")
        self.ctx, self.every, self.job_dir, self.workspace = ctx, every, job_dir, workspace
        self.root = job_dir / JobFiles.CHECKPOINTS
        self.due = False
        self.seq = 0
        self.warned = False
        self.saved: dict[str, Any] | None = None  # the checkpoint to put back, until it is
        self.resume = resume
        if resume is not None:
            import torch

            self.saved = torch.load(resume / STATE, map_location="cpu", weights_only=False)
            if self.saved.get("format") != FORMAT:
                raise RuntimeError(f"cannot resume from a checkpoint of format {self.saved.get('format')}")
            self.seq = int(self.saved["seq"])

    # ---- what a resumed attempt asks before its first step --------------------------------------
    @property
    def epoch(self) -> int:
        return int(self.saved["epoch"]) if self.saved is not None else 0

    def resumes(self, source: tuple[str, int]) -> dict[str, Any] | None:
        """The saved position of this step source, when it is the one the checkpoint was taken at."""
        if self.saved is not None and tuple(self.saved["source"]) == source:
            return self.saved
        return None

    # ---- taking ------------------------------------------------------------------------------
    def logged(self) -> None:
        """After a log: every `every`-th makes a checkpoint due at the next step boundary."""
        if self.ctx._log_count % self.every == 0:
            self.due = True

    def boundary(self, source: tuple[str, int], position: int, pre: dict[str, Any] | None) -> None:
        """The job asks `source` for its next step: the step before is done."""
        if self.due:
            self.due = False
            self.take(source, position, pre)

    def take(self, source: tuple[str, int], position: int, pre: dict[str, Any] | None) -> Path:
        import torch

        ctx = self.ctx
        self.seq += 1
        state = {
            "format": FORMAT,
            "seq": self.seq,
            "source": list(source),
            "position": position,
            "pre": pre,
            "epoch": ctx._epoch,
            "step": ctx._last_step,
            "counters": ctx._counters(),
            "model": ctx.model.state_dict() if ctx.model is not None else None,
            "optimizer": ctx.optimizer.state_dict() if ctx.optimizer is not None else None,
            "schedulers": [s.state_dict() for s in ctx._schedulers],
            "user": ctx.state,
            "rng": rng_states(ctx),
        }
        meta = {"step": ctx._last_step, "logs": ctx._log_count, "epoch": ctx._epoch}
        return write(self.root, self.seq, self.job_dir, self.workspace, meta,
                     lambda d: torch.save(state, d / STATE))  # fmt: skip

    def no_boundary(self) -> None:
        """A due checkpoint with no step source to resume at: said once, not taken."""
        if self.due and not self.warned:
            self.warned = True
            print(
                "reprotrain: checkpoint_every needs the loop to take its steps from ctx.dataloader "
                "or ctx.steps (where a resumed run skips ahead); no checkpoint taken",
                file=sys.stderr,
            )
        self.due = False

    # ---- putting back --------------------------------------------------------------------------
    def restore(self) -> None:
        """At the saved step boundary: every state, the logs and the working directory as saved."""
        saved, ctx = self.saved, self.ctx
        assert saved is not None and self.resume is not None
        self.saved = None
        if (ctx.model is None) != (saved["model"] is None) or (ctx.optimizer is None) != (
            saved["optimizer"] is None
        ):
            raise RuntimeError("cannot resume: the job tracks another model or optimizer than the checkpoint")
        if ctx.model is not None:
            ctx.model.load_state_dict(saved["model"])
        if ctx.optimizer is not None:
            ctx.optimizer.load_state_dict(saved["optimizer"])
        if len(ctx._schedulers) != len(saved["schedulers"]):
            raise RuntimeError("cannot resume: the job registers another number of LR schedulers")
        for sched, s in zip(ctx._schedulers, saved["schedulers"], strict=True):
            sched.load_state_dict(s)
        ctx.state.clear()
        ctx.state.update(saved["user"])
        ctx._restore_counters(saved["counters"])
        set_rng_states(ctx, saved["rng"])
        logs_back(self.resume, self.job_dir, ctx._events.replace)
        copy_tree(self.resume / WORK, self.workspace)
        ctx.resumed = {"from_step": saved["step"], "checkpoint": saved["seq"], "logs": ctx._log_count}
