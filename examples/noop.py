"""The smallest job: what the benchmarks time is reprotrain's own overhead, not training."""


def train(ctx):
    return {"ok": 1}
