"""What training code and the job process import: the Context, policy application, digests."""

from reprotrain.train.context import Context

__all__ = ["Context"]
