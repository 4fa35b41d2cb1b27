"""Values a YAML author writes loosely, normalised: durations, sizes, CPUs, commands, maps, globs.

Each is an `Annotated` type for the models: a before-validator that turns "10m" into 600.0
seconds, "256Mi" into bytes, a command string into `["sh", "-c", ...]`, and a JSON schema
that describes what the YAML may hold (not what the model stores).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_PATTERN = r"^\s*(\d+(\.\d+)?|((\d+(\.\d+)?)(ms|s|m|h|d))+)\s*$"
_SIZE_UNITS = {
    "": 1, "k": 1000, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
    "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|k|K|M|G|T|)B?")
_SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*(Ki|Mi|Gi|Ti|k|K|M|G|T)?B?\s*$"


def parse_duration(value: Any) -> float:
    """Seconds from a number of seconds or a string such as "30s", "1h30m", "500ms"."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a duration such as 30, '30s', '10m' or '1h30m', got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(
                    f"invalid duration {value!r}: expected e.g. '30s', '10m', '1h30m' or '500ms'"
                ) from None
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    else:
        seconds = float(value)
    if seconds <= 0:
        raise ValueError(f"duration must be greater than 0, got {value!r}")
    return seconds


def parse_size(value: Any) -> int:
    """Bytes from an int or a string such as "256Mi" (1024-based) or "1G" (1000-based)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a size such as 1024, '256Mi' or '1G', got {value!r}")
    if isinstance(value, str):
        match = _SIZE_RE.fullmatch(value.strip())
        if not match:
            raise ValueError(
                f"invalid size {value!r}: expected a number with an optional unit "
                "Ki, Mi, Gi, Ti (1024-based) or K, M, G, T (1000-based)"
            )
        size = float(match.group(1)) * _SIZE_UNITS[match.group(2)]
    else:
        size = value
    if size < 0:
        raise ValueError(f"size must not be negative, got {value!r}")
    return int(size)


def format_size(size: int) -> str:
    """A byte count for people: 512 B, 3.0 KiB, 1.5 GiB (1024-based, as `parse_size` reads "Mi")."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def parse_cpu(value: Any) -> Any:
    """Accept Kubernetes-style millicores ("500m" -> 0.5) besides plain numbers."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number of CPU cores such as 0.5 or '500m', got {value!r}")
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?m\s*", value):
        return float(value.strip()[:-1]) / 1000
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{excerpt(value)} is not a number of cores, e.g. 0.5 or 2 "
                             "(or millicores, e.g. '500m')") from None
    return value


def excerpt(text: str, limit: int = 80) -> str:
    """`repr(text)`, cut to about `limit` characters when longer (saying how long it was), so
    that an error never echoes a whole file."""
    shown = repr(text)
    if len(shown) <= limit + 2:
        return shown
    return f"{shown[:limit]}…{shown[0]} ({len(text)} characters)"


def _scalar_to_str(value: Any) -> Any:
    """YAML `true`/`3`/`1.5` as the strings a user meant in env vars and labels."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _str_values(value: Any) -> Any:
    return {k: _scalar_to_str(v) for k, v in value.items()} if isinstance(value, dict) else value


def _cmd_list(value: Any) -> Any:
    """A single string runs through `sh -c`; numbers in a list become strings."""
    if isinstance(value, str):
        return ["sh", "-c", value]
    if isinstance(value, list):
        return [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in value]
    return value


_DURATION_SCHEMA = {"anyOf": [
    {"type": "number", "exclusiveMinimum": 0},
    {"type": "string", "pattern": _DURATION_PATTERN},
]}
_SIZE_SCHEMA = {"anyOf": [
    {"type": "integer", "minimum": 0},
    {"type": "string", "pattern": _SIZE_PATTERN},
]}
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]
Size = Annotated[int, BeforeValidator(parse_size), WithJsonSchema(_SIZE_SCHEMA)]
Cpu = Annotated[float, BeforeValidator(parse_cpu), WithJsonSchema({"anyOf": [
    {"type": "number", "exclusiveMinimum": 0}, {"type": "string", "pattern": r"^\d+(\.\d+)?m$"}]})]
StrMap = Annotated[dict[str, str], BeforeValidator(_str_values), WithJsonSchema({
    "type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}})]
Command = Annotated[list[str], BeforeValidator(_cmd_list), WithJsonSchema({"anyOf": [
    {"type": "string"}, {"type": "array", "items": {"type": ["string", "number"]}}]})]


def no_default(schema: dict[str, Any]) -> None:
    """Drop a placeholder default from the JSON schema (the real default is computed)."""
    schema.pop("default", None)


def compiled_glob(pattern: str) -> str:
    """Check a glob by compiling it; `compile_glob` raises ValueError with the reason."""
    from bacalhau_flow.plan.glob import compile_glob  # lazy: the planner may import the spec

    compile_glob(pattern)
    return pattern


GlobStr = Annotated[str, AfterValidator(compiled_glob)]
