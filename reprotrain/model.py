"""Base classes of the contract models: frozen where they cross a process, sparse where absent means unset."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_serializer


class Frozen(BaseModel):
    """A value that crosses a process or is stored: immutable, and no unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Sparse(Frozen):
    """Serialized without its unset (None) fields: stored JSON says only what is known.

    The JSON schema stays the model's own (the serializer declares no return type)."""

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: Any):  # type: ignore[no-untyped-def]
        return {k: v for k, v in handler(self).items() if v is not None}
