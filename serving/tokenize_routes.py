"""`/tokenize`, `/detokenize` and `/version`, as vLLM serves them.

`POST /tokenize` takes `{"prompt": str}` or `{"messages": [...], "add_generation_prompt": bool}`
and answers `{"count", "max_model_len", "tokens"}`: the ids the engine would see for a completion
(text is encoded without special tokens, as /v1/completions does, unless `add_special_tokens`)
or a chat (the model's chat template). `POST /detokenize` takes `{"tokens": [...]}` and answers
`{"prompt": str}`. Bad input gets 400 with the server's OpenAI error body.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from typing import Annotated

from fastapi import FastAPI
from jinja2 import TemplateError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.json_types import Text, TokenIds, documented_as
from serving.protocol import ChatMessage, RequestError, StrictModel


def package_version() -> str:
    """The installed `specroute` distribution's version ('unknown' when run from a bare checkout)."""
    try:
        return importlib.metadata.version("specroute")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class TokenizeRequest(StrictModel):
    """Exactly one of `prompt` and `messages` (the document says so with `oneOf`)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["prompt"]}, {"required": ["messages"]}]})

    model: Text | None = None
    prompt: Annotated[Text | None, documented_as({"type": "string"})] = None
    messages: Annotated[list[ChatMessage] | None, Field(min_length=1), documented_as(
        {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/ChatMessage"}})] = None
    add_generation_prompt: bool = True
    add_special_tokens: bool = False

    @model_validator(mode="after")
    def _one_input(self) -> "TokenizeRequest":
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("send either prompt or messages")
        return self


class DetokenizeRequest(StrictModel):
    model: Text | None = None
    tokens: TokenIds


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    prompt: str


class VersionResponse(BaseModel):
    version: str


def tokenize(tokenizer, body: TokenizeRequest) -> list[int]:
    """The ids of `body`'s prompt or messages; RequestError (400) when the tokenizer refuses them."""
    if body.prompt is not None:
        return list(tokenizer.encode(body.prompt, add_special_tokens=body.add_special_tokens))
    for index, message in enumerate(body.messages):
        message.check_supported(f"messages.{index}.")
    try:
        encoded = tokenizer.apply_chat_template([m.as_template_message() for m in body.messages], tokenize=True,
                                                add_generation_prompt=body.add_generation_prompt)
    except TemplateError as exc:
        raise RequestError(f"the chat template refused the messages: {exc}", param="messages") from exc
    except Exception as exc:        # the tokenizer's own message is about its internals
        raise RequestError("the tokenizer could not encode this conversation", param="messages") from exc
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def detokenize(tokenizer, vocab_size: int, tokens: list[int]) -> str:
    """The text of `tokens`; RequestError (400) for an id outside the vocabulary."""
    for index, token in enumerate(tokens):
        if token >= vocab_size:
            raise RequestError(f"tokens.{index}: {token} is not a token id (vocabulary of {vocab_size})",
                               param=f"tokens.{index}")
    return tokenizer.decode(tokens)


def install_tokenize_routes(app: FastAPI, state, check_model) -> None:
    """Add the three routes; tokenising runs on the state's tokenizer pool, off the event loop.
    `check_model(state, model)` refuses a model name the server does not serve (404)."""

    async def off_loop(work):
        return await asyncio.get_running_loop().run_in_executor(state.prepare_pool(), work)

    @app.post("/tokenize", response_model=TokenizeResponse)
    async def tokenize_route(body: TokenizeRequest):
        check_model(state, body.model)
        tokens = await off_loop(lambda: tokenize(state.tokenizer, body))
        return TokenizeResponse(count=len(tokens), max_model_len=state.config.max_model_len, tokens=tokens)

    @app.post("/detokenize", response_model=DetokenizeResponse)
    async def detokenize_route(body: DetokenizeRequest):
        check_model(state, body.model)
        text = await off_loop(lambda: detokenize(state.tokenizer, state.vocab_size, body.tokens))
        return DetokenizeResponse(prompt=text)

    @app.get("/version", response_model=VersionResponse)
    async def version():
        return VersionResponse(version=package_version())
