"""What training code and the job process import: the Context, policy application, digests."""

from reprotrain.job.context import Context

__all__ = ["Context"]
