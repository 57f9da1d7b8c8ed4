"""A checker of responses against the app's OpenAPI document (`response_errors`), for the
hand-written cases of tests and `bench.reliability` (the generated ones go through schemathesis,
`tests/serving/contract.py`)."""

from __future__ import annotations

import json


def schema_errors(value, schema: dict, components: dict, path: str = "$") -> list[str]:
    """Where `value` breaks `schema` (the JSON Schema subset FastAPI emits; empty when it conforms).

    Checks $ref, anyOf/oneOf, const/enum, type (JSON's: whole floats are integers, bools are
    not), object properties and required keys, and array items. Enough to hold every response
    to the OpenAPI document without a jsonschema dependency.
    """
    if "$ref" in schema:
        return schema_errors(value, components[schema["$ref"].rsplit("/", 1)[1]], components, path)
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf", schema.get("oneOf"))
        if any(not schema_errors(value, option, components, path) for option in options):
            return []
        return [f"{path}: {value!r:.60} matches none of {len(options)} alternatives"]
    if "contentSchema" in schema and isinstance(value, str):         # a JSON document inside a string
        try:
            return schema_errors(json.loads(value), schema["contentSchema"], components, path)
        except ValueError:
            return [f"{path}: {value!r:.60} is not JSON"]
    if "const" in schema and value != schema["const"]:
        return [f"{path}: {value!r:.60} is not {schema['const']!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r:.60} is not one of {schema['enum']}"]
    kind = schema.get("type")
    checks = {"object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
              "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
              "null": lambda v: v is None,
              "integer": lambda v: not isinstance(v, bool) and (isinstance(v, int) or isinstance(v, float)
                                                                and v.is_integer()),
              "number": lambda v: not isinstance(v, bool) and isinstance(v, (int, float))}
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds and not any(checks[k](value) for k in kinds):
        return [f"{path}: {value!r:.60} is not of type {kind}"]
    errors = []
    if isinstance(value, dict):
        errors += [f"{path}: missing {key!r}" for key in schema.get("required", []) if key not in value]
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                errors += schema_errors(value[key], sub, components, f"{path}.{key}")
        if schema.get("additionalProperties") is False:
            errors += [f"{path}: unexpected {key!r}" for key in value if key not in schema.get("properties", {})]
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += schema_errors(item, schema["items"], components, f"{path}[{index}]")
    return errors


def response_errors(openapi: dict, path: str, method: str, response) -> list[str]:
    """Where an httpx/TestClient response breaks the document: an undeclared status or content
    type, or a JSON body (each SSE event, for text/event-stream) that breaks its schema."""
    declared = openapi["paths"][path][method]["responses"]
    status = str(response.status_code)
    if status not in declared:
        return [f"{method.upper()} {path}: status {status} is not in the document ({sorted(declared)})"]
    media = response.headers.get("content-type", "").split(";")[0].strip()
    content = declared[status].get("content", {})
    if media not in content:
        return [f"{method.upper()} {path} {status}: content type {media!r} is not in {sorted(content)}"]
    components = openapi.get("components", {}).get("schemas", {})
    if media == "application/json":
        return schema_errors(response.json(), content[media]["schema"], components)
    if media == "text/event-stream":
        errors = []
        for block in response.text.split("\n\n"):
            if not block.strip():
                continue
            if not block.startswith("data: "):
                return [f"SSE block {block[:40]!r} is not a data event"]
            errors += schema_errors({"data": block[len("data: "):]}, content[media]["itemSchema"], components, "$event")
        return errors
    return []
