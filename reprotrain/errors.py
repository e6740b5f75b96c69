"""The one error tree of reprotrain: every error raised on purpose is one of these.

    ReprotrainError              base; `code` names the kind, `field` the offending field if any
    ├── SpecInvalid              a job spec (file or request body) failed validation
    ├── RequestInvalid           a query parameter or other part of a request that is not the spec
    ├── InputError               an input named by a spec is missing or unreadable
    ├── ResultInvalid            a stored result cannot be read or has the wrong shape
    ├── NotFound                 a job, bundle or artifact that does not exist
    ├── ArtifactTampered         stored bytes no longer match their digest (code integrity_error)
    ├── RequestTooLarge          a request body over its limit (REPROTRAIN_MAX_SPEC_BYTES)
    ├── VerifyFailed             a run manifest's signature or a digest it lists does not check out
    ├── Conflict                 the request does not fit the job's state (cancel a finished job)
    │   ├── AmbiguousId          a job id prefix that more than one job has
    │   └── NoMatchingWorker     no live worker has the environment a job must run in
    ├── Unauthorized             a missing or wrong API token
    ├── BundleInvalid            an uploaded bundle is malformed or unsafe
    │   └── BundleTooLarge       … or larger than the configured limit
    ├── LaunchError              a job process, the fork server or a worker could not start or died
    ├── JobFailed                the job's own code failed in a way worth one line (job process)
    └── ApiError                 the server answered an SDK/CLI request with an error (client side)
        └── Unreachable          … or could not be reached at all

Every message is one line meant for a person; the CLI prints it after `reprotrain: error:` and the
API maps the server-side kinds to HTTP statuses in one place (service/errors.py).
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


class RequestInvalid(ReprotrainError):
    code = "request_invalid"


class InputError(ReprotrainError):
    code = "input_error"


class ResultInvalid(ReprotrainError):
    code = "result_invalid"


class NotFound(ReprotrainError):
    code = "not_found"


class ArtifactTampered(ReprotrainError):
    """Stored bytes that no longer match the digest they were stored under: never served."""

    code = "integrity_error"

    def __init__(self, digest: str, actual: str, what: str = "") -> None:
        where = f"{what} ({digest})" if what else digest
        super().__init__(
            f"artifact {where} does not match its digest (the bytes now hash to {actual}): it was "
            "changed after it was stored, and is not served"
        )
        self.digest, self.actual, self.what = digest, actual, what


class RequestTooLarge(ReprotrainError):
    code = "request_too_large"


class VerifyFailed(ReprotrainError):
    code = "verify_failed"


class Conflict(ReprotrainError):
    code = "conflict"


class AmbiguousId(Conflict):
    code = "ambiguous_id"


class NoMatchingWorker(Conflict):
    """No live worker has the environment a job must run in (a bisect side, a re-run)."""

    code = "no_matching_worker"


class Unauthorized(ReprotrainError):
    code = "unauthorized"


class BundleInvalid(ReprotrainError):
    code = "bundle_invalid"


class BundleTooLarge(BundleInvalid):
    code = "bundle_too_large"


class LaunchError(ReprotrainError):
    code = "launch_error"


class JobFailed(ReprotrainError):
    code = "job_failed"


class ApiError(ReprotrainError):
    """An error answer from the API, with its HTTP status and the server's error code."""

    def __init__(
        self, message: str, *, status: int = 0, code: str = "api_error", field: str | None = None
    ) -> None:
        super().__init__(message, field=field)
        self.status = status
        self.code = code


class Unreachable(ApiError):
    pass
