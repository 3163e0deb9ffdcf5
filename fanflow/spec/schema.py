"""The JSON Schema of workflow files, for editors (yaml-language-server, VS Code, ...)."""

from __future__ import annotations

from typing import Any

from fanflow.spec.model import Workflow


def json_schema() -> dict[str, Any]:
    schema = Workflow.model_json_schema(by_alias=True, mode="validation")
    for internal in ("source", "import_paths", "code"):
        schema.get("properties", {}).pop(internal, None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "fanflow workflow"
    # Parameters may be written as a bare default value (`top_k: 2`).
    params = schema.get("properties", {}).get("params")
    if params and "additionalProperties" in params:
        params["additionalProperties"] = {
            "anyOf": [
                params["additionalProperties"],
                {"type": ["string", "number", "boolean", "array", "null"]},
            ]
        }
    return schema
