"""JSON Schema of one pipeline document, for editors and for `bflow validate`'s readers.

`python -m bacalhau_flow.spec.schema` regenerates the committed `pipeline.schema.json`;
`--check` only compares it with the models and exits 1 when it is out of date.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .models import Pipeline

SCHEMA_FILE = Path(__file__).with_name("pipeline.schema.json")
SCHEMA_ID = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one pipeline document, as the models define it."""
    schema = Pipeline.model_json_schema(mode="validation")
    schema["$schema"] = SCHEMA_ID
    schema["title"] = "bacalhau-flow pipeline"
    schema["description"] = (
        "One pipeline document of a bacalhau-flow spec file "
        "(a file may hold several, separated by ---)."
    )
    return schema


def render() -> str:
    """The schema as committed: pretty-printed with sorted keys and a final newline."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in args:
        current = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.exists() else ""
        if current != text:
            print(f"{SCHEMA_FILE} is out of date; run python -m bacalhau_flow.spec.schema",
                  file=sys.stderr)
            return 1
        return 0
    SCHEMA_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
