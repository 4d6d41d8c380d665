"""A minimal instance of a JSON schema (private): the fake engine's structured-output reply."""

from __future__ import annotations

from typing import Any


def example_for_schema(schema: dict[str, Any]) -> Any:
    """A minimal instance of a JSON schema (enum/const, objects, arrays, scalars, anyOf/oneOf)."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_for_schema(schema[key][0])
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        props: dict[str, Any] = schema.get("properties", {})
        wanted = schema.get("required") or list(props)
        return {name: example_for_schema(props.get(name, {})) for name in wanted}
    if kind == "array":
        return [example_for_schema(schema.get("items", {})) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "a" * schema.get("minLength", 1)
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return True
    return None
