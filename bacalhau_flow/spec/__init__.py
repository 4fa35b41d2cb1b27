"""The pipeline spec: YAML documents validated into pydantic models (PRODUCT.md section 1).

The names below are imported when first used: a compute node reads only `spec.values`
(sizes), and need not load YAML and the spec models to run shards."""

from importlib import import_module
from typing import Any

_WHERE = {
    "load_spec": ".loader", "load_spec_text": ".loader",
    "Input": ".models", "Output": ".models", "Pipeline": ".models", "Resources": ".models",
    "Schedule": ".models", "Transform": ".models",
    "json_schema": ".schema",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value
