"""The one error tree of reprotrain.

    ReprotrainError
    ├── SpecInvalid        a job spec (file or request body) failed validation
    ├── InputError         an input named by a spec is missing or unreadable
    ├── ResultInvalid      a stored result cannot be read or has the wrong shape
    ├── LaunchError        the runner could not start or supervise a job process
    ├── NotFound           a job, bundle or artifact that does not exist
    ├── Conflict           the request does not fit the job's state (cancel a finished job)
    ├── Unauthorized       a missing or wrong API token
    └── BundleInvalid      an uploaded bundle is malformed or unsafe (reprotrain.bundles)
        └── BundleTooLarge

Every error carries a one-line message meant for a person; `field` names the offending
field where there is one, so the CLI and the HTTP layer can point at it.
"""

from __future__ import annotations


class ReprotrainError(Exception):
    """Base of every error reprotrain raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class SpecInvalid(ReprotrainError):
    code = "spec_invalid"


class InputError(ReprotrainError):
    code = "input_error"


class ResultInvalid(ReprotrainError):
    code = "result_invalid"


class LaunchError(ReprotrainError):
    code = "launch_error"


class NotFound(ReprotrainError):
    code = "not_found"


class Conflict(ReprotrainError):
    code = "conflict"


class Unauthorized(ReprotrainError):
    code = "unauthorized"
