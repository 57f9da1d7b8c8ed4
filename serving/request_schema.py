"""The request bodies' JSON Schema made exactly what the server accepts, for the served model.

pydantic's schema of `serving/protocol.py` says what parses; the server then refuses some of
it. `fit_request_schemas` closes that gap in the OpenAPI document, so that a client (or a
schema-driven fuzzer) that sends what the document allows is never refused for it:

- token ids are bounded by the served vocabulary (`maximum: vocab_size - 1`);
- every field the server refuses unless it is neutral (`x-refused-fields`: `best_of`,
  `logit_bias`, `tool_calls` ...) is listed with the neutral values (or null) it accepts.

The bounds that do not depend on the model (n, seed, top_p, the conditional requirements)
are in the pydantic models themselves.
"""

from __future__ import annotations

from typing import Any

from serving.json_types import TOKEN_ID_MARK
from serving.protocol import REFUSED_CHAT, REFUSED_COMMON, REFUSED_MESSAGE

REFUSED_BY_SCHEMA = {"CompletionRequest": REFUSED_COMMON, "ChatCompletionRequest": REFUSED_CHAT,
                     "ChatMessage": REFUSED_MESSAGE}


def neutral_schema(neutral: tuple) -> dict:
    """The values of a refused field that mean "off" (null always does)."""
    values: list[Any] = [None]
    for value in neutral:
        if value not in values:         # 1 and 1.0 are one JSON value
            values.append(value)
    return {"enum": values, "description": "not supported: only this neutral value (or null) is accepted"}


def _bound_token_ids(node: Any, max_token_id: int) -> None:
    if isinstance(node, dict):
        if node.pop(TOKEN_ID_MARK, False):
            node["maximum"] = max_token_id
        for child in node.values():
            _bound_token_ids(child, max_token_id)
    elif isinstance(node, list):
        for child in node:
            _bound_token_ids(child, max_token_id)


def fit_request_schemas(schemas: dict[str, dict], vocab_size: int) -> None:
    """Edit the document's `components.schemas` in place (see the module docstring)."""
    _bound_token_ids(schemas, vocab_size - 1)
    for name, refused in REFUSED_BY_SCHEMA.items():
        if name not in schemas:
            continue
        properties = schemas[name].setdefault("properties", {})
        for field, neutral in refused.items():
            properties.setdefault(field, neutral_schema(neutral))
