"""Hypothesis strategies from the app's OpenAPI (JSON Schema) request bodies, plus type-confused variants.

A small converter (hypothesis-jsonschema is not a dependency): objects, anyOf, arrays, strings,
integers, numbers, booleans, null, enum/const and local $refs. Sizes are kept small so a fuzz
run finishes in seconds on a tiny model; integers and numbers include edge values.
"""

from __future__ import annotations

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
