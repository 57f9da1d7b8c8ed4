"""The OpenAPI document as the server really behaves: every status and content type it sends.

FastAPI's own document lists a 422 the server never sends (validation errors are 400s), no
SSE, and empty 200 schemas. `install_openapi(app)` replaces it: each route gets its real
statuses (400/404/413/429/503, 500 when a generation fails), JSON 200 schemas from the models
below, `text/event-stream` for streamed responses (OpenAPI 3.2's `itemSchema`: each event's
`data` is a chunk as JSON (`contentSchema`), the last one `[DONE]`) and `text/plain` for the Prometheus `/metrics`. A schema-driven fuzzer
can then check every response against it (`bench/reliability.py`, `tests/serving/test_fuzz.py`).
"""

from __future__ import annotations

from typing import Literal

from fastapi import FastAPI
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from serving.request_schema import fit_request_schemas
from serving.tokenize_routes import DetokenizeResponse, TokenizeResponse, VersionResponse


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | int | None


class ErrorResponse(BaseModel):
    """Every refusal and failure: OpenAI's error body."""

    error: ErrorDetail


class SpecDecodeMetrics(BaseModel):
    """Per-request speculation metrics (`--per-request-spec-metrics`); absent when off."""

    num_steps: int
    num_drafts: int
    num_draft_tokens: int
    num_accepted_tokens: int
    mean_acceptance_length: float = Field(description="1 + accepted tokens per draft (vLLM's definition)")
    draft_acceptance_rate: float = Field(description="accepted / proposed draft tokens")
    chain: str = Field(description="the chain most steps of this request ran ('target' for plain decoding)")
    k: int = Field(description="the K most steps of this request used")
    decisions: dict[str, int] = Field(
        description="decision ('plain' or 'ngram>target@k4') -> steps (the router may change its choice per step)")
    accepted_histogram: list[int] | None = Field(
        default=None, description="detailed: drafts by number of tokens accepted (index = tokens accepted)")
    acceptance_by_position: list[float] | None = Field(
        default=None, description="detailed: P(draft position p accepted | it was proposed), p = 0, 1, ...")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    num_drafts: int
    num_draft_tokens: int
    num_accepted_tokens: int


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    """Chat's logprobs (null unless the request set logprobs: true): the model's raw distribution."""

    content: list[ChatTokenLogprob] | None


class CompletionLogprobs(BaseModel):
    """The legacy format (null unless the request set logprobs): the model's raw distribution."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: str | None
    spec_decode: SpecDecodeMetrics | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: str | None
    spec_decode: SpecDecodeMetrics | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: str | None
    spec_decode: SpecDecodeMetrics | None = None


class ChatCompletionChunk(BaseModel):
    """One `data:` event of a streamed chat completion (the usage chunk has no choices)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChunk(CompletionResponse):
    """One `data:` event of a streamed completion (the usage chunk has no choices)."""


class StreamError(BaseModel):
    """The event sent in a stream whose generation failed (the stream then goes on to [DONE])."""

    error: ErrorDetail


class SamplingDefaultsOut(BaseModel):
    temperature: float
    top_p: float
    top_k: int
    source: str


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    max_model_len: int
    sampling_defaults: SamplingDefaultsOut


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    status: Literal["ready", "starting", "draining"]
    model: str
    router: dict
    num_in_flight: int
    sampling_defaults: SamplingDefaultsOut


_MODELS = [ErrorResponse, CompletionResponse, ChatCompletionResponse, CompletionChunk, ChatCompletionChunk,
           StreamError, ModelList, HealthResponse, ReadyResponse, TokenizeResponse, DetokenizeResponse, VersionResponse]
_REF = "#/components/schemas/{model}"


def _json(model: type[BaseModel], description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}}}


def _errors(*statuses: int) -> dict:
    why = {400: "invalid or unsupported request (OpenAI error body naming the field)",
           404: "unknown model", 408: "request body not received within --body-timeout-s",
           413: "request body over --max-body-bytes",
           429: "queue full; Retry-After says when a slot is expected to free",
           500: "the generation failed (the engine loop goes on)",
           503: "the server is draining (SIGTERM) or the engine loop is not running"}
    return {str(s): _json(ErrorResponse, why[s]) for s in statuses}


def _generation(full: type[BaseModel], chunk: type[BaseModel]) -> dict:
    ok = _json(full, "the completion (stream: false), or server-sent events (stream: true)")
    event_json = {"type": "string", "contentMediaType": "application/json", "contentSchema": {
        "anyOf": [{"$ref": _REF.format(model=chunk.__name__)}, {"$ref": _REF.format(model="StreamError")}]}}
    ok["content"]["text/event-stream"] = {      # OpenAPI 3.2's server-sent events: one itemSchema per event
        "itemSchema": {"description": "`data: <chunk JSON>` events, then `data: [DONE]`", "type": "object", "required": ["data"],
                       "properties": {"data": {"anyOf": [{"const": "[DONE]"}, event_json]}}}}
    return {"200": ok, **_errors(400, 404, 408, 413, 429, 500, 503)}


def _responses() -> dict[tuple[str, str], dict]:
    return {
        ("/v1/completions", "post"): _generation(CompletionResponse, CompletionChunk),
        ("/v1/chat/completions", "post"): _generation(ChatCompletionResponse, ChatCompletionChunk),
        ("/v1/models", "get"): {"200": _json(ModelList, "the served model and its sampling defaults")},
        ("/tokenize", "post"): {"200": _json(TokenizeResponse, "the prompt's token ids"), **_errors(400, 404, 408, 413)},
        ("/detokenize", "post"): {"200": _json(DetokenizeResponse, "the ids' text"), **_errors(400, 404, 408, 413)},
        ("/version", "get"): {"200": _json(VersionResponse, "the specroute package's version")},
        ("/health", "get"): {"200": _json(HealthResponse, "the engine loop runs"), **_errors(503)},
        ("/ready", "get"): {"200": _json(ReadyResponse, "ready"), "503": _json(ReadyResponse, "starting or draining")},
        ("/metrics", "get"): {"200": {"description": "Prometheus text exposition format 0.0.4",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }


def install_openapi(app: FastAPI, vocab_size: int, open_paths: tuple[str, ...] | None = None) -> None:
    """Replace `app.openapi()` with the document described above (built once, then cached);
    request bodies are fitted to what the server accepts for a model of `vocab_size` tokens.
    With `open_paths` (--api-key set), every other route needs a Bearer key and lists its 401."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = FastAPI.openapi(app)
            _, defs = models_json_schema([(m, "serialization") for m in _MODELS], ref_template=_REF)
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            schemas.update(defs.get("$defs", {}))
            fit_request_schemas(schemas, vocab_size)
            for (path, method), responses in _responses().items():
                operation = document["paths"][path][method]
                operation["responses"] = responses
                if open_paths is not None and path not in open_paths:
                    operation["responses"]["401"] = _json(ErrorResponse, "missing or wrong API key (--api-key)")
                    operation["security"] = [{"bearer": []}]
            if open_paths is not None:
                document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi
