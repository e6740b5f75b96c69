"""reprotrain: run PyTorch training jobs reproducibly, and prove it (core; imports no torch)."""

from reprotrain.errors import (
    InputError,
    LaunchError,
    ReprotrainError,
    ResultInvalid,
    SpecInvalid,
)
from reprotrain.spec import JobSpec, load_spec, parse_spec

__version__ = "0.1.0"
__all__ = [
    "InputError",
    "JobSpec",
    "LaunchError",
    "ReprotrainError",
    "ResultInvalid",
    "SpecInvalid",
    "load_spec",
    "parse_spec",
]
