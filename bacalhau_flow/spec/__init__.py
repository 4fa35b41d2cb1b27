"""The pipeline spec: YAML documents validated into pydantic models (PRODUCT.md section 1)."""

from typing import Any

from .loader import load_spec, load_spec_text
from .models import Input, Output, Pipeline, Resources, Schedule, Transform

__all__ = [
    "Input",
    "Output",
    "Pipeline",
    "Resources",
    "Schedule",
    "Transform",
    "json_schema",
    "load_spec",
    "load_spec_text",
]


def __getattr__(name: str) -> Any:
    # `json_schema` is imported lazily so `python -m bacalhau_flow.spec.schema` runs cleanly.
    if name == "json_schema":
        from .schema import json_schema

        return json_schema
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
