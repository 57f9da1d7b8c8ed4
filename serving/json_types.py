"""The JSON values requests are made of, as pydantic types whose JSON Schema is the contract.

Strings must be valid Unicode (a lone UTF-16 surrogate such as `"\\ud800"` is refused by
name, before a tokenizer sees it); a whole-number float such as `4.0` counts as an integer, as
JSON Schema counts it; integer bounds are checked with the exact limit in the message and
documented as `minimum` / `maximum`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema


def valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"contains a lone surrogate (U+{ord(text[exc.start]):04X}) at character {exc.start}; "
                         "strings must be valid Unicode") from None
    return text


def whole_number(value):
    """4.0 -> 4 (JSON Schema's integers include whole-number floats); anything else unchanged."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def whole_int(minimum: int | None = None, maximum: int | None = None, **schema) -> Any:
    """An integer (whole-number floats included) in [minimum, maximum], checked with the exact
    bounds in its message (pydantic's own would print 2**64 - 1 as a rounded float) and
    documented as JSON Schema `minimum` / `maximum` (pydantic emits `ge` / `le` here)."""

    def check(value: int) -> int:
        if minimum is not None and value < minimum:
            raise ValueError(f"Input should be greater than or equal to {minimum}")
        if maximum is not None and value > maximum:
            raise ValueError(f"Input should be less than or equal to {maximum}")
        return value

    bounds = {k: v for k, v in (("minimum", minimum), ("maximum", maximum)) if v is not None}
    return Annotated[int, BeforeValidator(whole_number), AfterValidator(check),
                     WithJsonSchema({"type": "integer", **bounds, **schema})]


def documented_as(schema: dict) -> WithJsonSchema:
    """The JSON Schema of a field the server parses more loosely than it accepts (a refused
    value gets a 400 naming it): the document lists only what is accepted."""
    return WithJsonSchema(schema)


Text = Annotated[str, AfterValidator(valid_unicode)]
NonEmptyText = Annotated[Text, Field(min_length=1)]
WholeInt = whole_int()
TOKEN_ID_MARK = "x-token-id"        # serving/request_schema.py sets its maximum from the served vocabulary
TokenIds = Annotated[list[whole_int(0, **{TOKEN_ID_MARK: True})], Field(min_length=1)]


def parse_json_object(text: str, what: str) -> dict:
    """`text` as a JSON object; a ValueError naming `what` (a flag, a file line) says why not."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} is not valid JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {text.strip()[:80]!r}")
    return value
