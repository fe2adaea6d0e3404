"""What every spec shares: the frozen, strict base model, the JSON-dropping helpers that keep
spec hashes stable when a field is added, and the hash itself."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError


class _Spec(BaseModel):
    # allow_inf_nan=False: every float field of every spec is finite (NaN/inf are refused).
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


def _drop_defaults(data: Any, spec: BaseModel, *names: str) -> Any:
    """Serialised ``spec`` without the fields ``names`` that hold their default (as _drop_unset)."""
    if isinstance(data, dict):
        for name in names:
            if getattr(spec, name) == type(spec).model_fields[name].get_default(call_default_factory=True):
                data.pop(name, None)
    return data


def _drop_unset(data: Any, spec: BaseModel, *names: str) -> Any:
    """Serialised ``spec`` without the fields ``names`` that are empty/None: a field added later
    leaves the JSON, hence ``spec_hash`` and compiled packages, of documents without it unchanged."""
    if isinstance(data, dict):
        for name in names:
            if not getattr(spec, name):
                data.pop(name, None)
    return data



def _field_errors(model: str, *errors: tuple[tuple[str | int, ...], str, Any]) -> ValidationError:
    """A ValidationError of ``(field path, message, input)`` errors, for a cross-field rule checked on
    a whole document that belongs to one field: raised from a model validator, each error keeps its
    path (``rl.sampler.gen_length: ...``) instead of the document's."""
    details = [InitErrorDetails(type=PydanticCustomError("cross_field", "{message}", {"message": message}), loc=loc, input=value)
               for loc, message, value in errors]
    return ValidationError.from_exception_data(model, details)


def spec_hash(spec: BaseModel) -> str:
    """sha256 of the spec's canonical JSON (sorted keys): equal specs, equal hashes."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
