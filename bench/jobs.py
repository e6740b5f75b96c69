"""Trivial jobs for benchmarks: what is measured is reprotrain's overhead, not training."""


def noop(ctx):
    return {"ok": 1}
