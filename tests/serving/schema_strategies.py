"""Hypothesis strategies from the app's OpenAPI (JSON Schema) request bodies, plus type-confused
variants, and a checker of responses against the same document (`response_errors`).

A small converter (hypothesis-jsonschema is not a dependency): objects, anyOf, arrays, strings,
integers, numbers, booleans, null, enum/const and local $refs. Sizes are kept small so a fuzz
run finishes in seconds on a tiny model; integers and numbers include edge values.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6)


def _integers(schema: dict) -> st.SearchStrategy:
    low = schema.get("minimum")
    high = schema.get("maximum")
    low = None if low is None else int(low) + (1 if schema.get("exclusiveMinimum") == low else 0)
    high = None if high is None else int(min(high, 2 ** 64))
    start = low if low is not None else -3
    near = st.integers(start, start + 40 if high is None else min(high, start + 40))
    edges = [v for v in (0, 1, -1, 2 ** 31, 2 ** 63, -(2 ** 63), 10 ** 20)
             if (low is None or v >= low) and (high is None or v <= high)]
    return near | st.sampled_from(edges) if edges else near


def _numbers(schema: dict) -> st.SearchStrategy:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False,
                     exclude_min="exclusiveMinimum" in schema, exclude_max="exclusiveMaximum" in schema)


def from_schema(schema: dict, components: dict, depth: int = 0) -> st.SearchStrategy:
    """A strategy for values valid under `schema` (with `components` resolving $refs)."""
    if "$ref" in schema:
        return from_schema(components[schema["$ref"].rsplit("/", 1)[1]], components, depth)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema or "oneOf" in schema:
        return st.one_of([from_schema(s, components, depth + 1) for s in schema.get("anyOf", schema.get("oneOf"))])
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        fields = {name: from_schema(s, components, depth + 1) for name, s in properties.items()}
        optional = {k: v for k, v in fields.items() if k not in required}
        if not properties:                                  # free-form dict
            return st.dictionaries(st.text(max_size=6), ANY_JSON, max_size=3)
        return st.fixed_dictionaries({k: fields[k] for k in required}, optional=optional)
    if kind == "array":
        items = from_schema(schema.get("items", {}), components, depth + 1) if schema.get("items") else ANY_JSON
        low = schema.get("minItems", 0)
        return st.lists(items, min_size=low, max_size=min(schema.get("maxItems", low + 3), low + 3))
    if kind == "string":
        return st.text(max_size=40)
    if kind == "integer":
        return _integers(schema)
    if kind == "number":
        return _numbers(schema)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return ANY_JSON


@st.composite
def confused(draw, valid: st.SearchStrategy) -> dict:
    """A valid body with one field replaced by arbitrary JSON (wrong type, NaN, nesting...)."""
    body = draw(valid)
    if isinstance(body, dict) and body and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(body)))
        body[key] = draw(ANY_JSON)
    elif isinstance(body, dict):
        body[draw(st.text(max_size=8))] = draw(ANY_JSON)
    return body


def request_bodies(openapi: dict, path: str) -> st.SearchStrategy:
    """Valid bodies, type-confused bodies and arbitrary JSON for the POST body of `path`."""
    schema = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    valid = from_schema(schema, openapi.get("components", {}).get("schemas", {}))
    return st.one_of(valid, valid, confused(valid), ANY_JSON)


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
            payload = block[len("data: "):]
            event = payload if payload == "[DONE]" else json.loads(payload)
            errors += schema_errors(event, content[media]["itemSchema"], components, "$event")
        return errors
    return []
