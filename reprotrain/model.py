"""Base classes of the contract models; every one is immutable.

Frozen  crosses a process within one version (a spec, a launch request, a child record):
        unknown fields are refused, so a writer and a reader that drift apart fail loudly
Stored  stored, then read by other versions (results, fingerprints): unknown fields are
        ignored, and a field added later carries a default
Sparse  Stored, and serialized without its optional fields that are None (verdicts, errors)
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_serializer


class Frozen(BaseModel):
    """A value that crosses a process within one version: immutable, and no unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Stored(BaseModel):
    """A value stored and read back, perhaps by another version: unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Sparse(Stored):
    """Serialized without its optional fields that are None: what is not known is not said.

    A required field stays even when None. The JSON schema stays the model's own (the serializer
    declares no return type)."""

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: Any):  # type: ignore[no-untyped-def]
        fields = type(self).model_fields
        return {
            k: v
            for k, v in handler(self).items()
            if v is not None or (k in fields and fields[k].is_required())
        }
