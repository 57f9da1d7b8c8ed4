"""OpenAI request bodies as strict pydantic models, and the SamplingParams they ask for.

Strict means what a client sends is what it gets: `"0.5"` is not a number, `true` is not 1,
and NaN/inf are refused (Python's json accepts `NaN`; we do not). A whole-number float such
as `4.0` counts as an integer, as JSON Schema counts it. Strings must be valid Unicode (a lone
UTF-16 surrogate such as `"\\ud800"` is refused by name, before a tokenizer sees it).

Every field is honoured or refused: fields OpenAI (or vLLM) defines that the engine cannot
honour are refused with a 400 naming the field when set to anything but their neutral value
(`REFUSED_*` below, listed in the OpenAPI document as `x-refused-fields` and as properties that
allow only the neutral value); fields nobody defines are ignored, as vLLM does. Sampling fields
a request leaves out take the model's defaults (`serving/sampling_defaults.py`).

The JSON Schema of each model is the contract (`serving/openapi.py`): a field the server parses
more loosely than it accepts (so that a refusal can name it) is documented with what it accepts
(`documented_as`), integer bounds are JSON Schema `minimum` / `maximum` (`whole_int`), and the
conditional requirements are `anyOf`s the server applies as written.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine import SamplingParams
from engine.logprobs import MAX_LOGPROBS
from serving.json_types import NonEmptyText, Text, TokenIds, documented_as, whole_int
from serving.sampling_defaults import OPENAI_DEFAULTS, SamplingDefaults

MAX_N = 16
GREEDY_BELOW = 1e-5          # temperatures this small are greedy (as vLLM does): dividing by them overflows
MAX_STOP = 16
MAX_PROMPTS = 16            # prompts in one completions request (each makes n sequences)
MAX_COMPLETION_LOGPROBS = 5    # the legacy endpoint's bound (OpenAI's)
MIN_SEED, MAX_SEED = -(2 ** 63), 2 ** 64 - 1    # the range torch.Generator.manual_seed accepts

# Field -> the values that mean "off" (None always does). Anything else gets a 400 naming it.
REFUSED_COMMON: dict[str, tuple] = {
    "logit_bias": ({},), "best_of": (1,), "min_tokens": (0,), "repetition_penalty": (1, 1.0), "min_p": (0, 0.0),
    "use_beam_search": (False,), "length_penalty": (1, 1.0), "stop_token_ids": ([],), "bad_words": ([],),
    "include_stop_str_in_output": (False,), "skip_special_tokens": (True,), "spaces_between_special_tokens": (True,),
    "prompt_logprobs": (), "truncate_prompt_tokens": (), "allowed_token_ids": (), "logits_processors": (),
    "guided_json": (), "guided_regex": (), "guided_choice": (), "guided_grammar": (), "structured_outputs": (),
    "priority": (0,), "store": (False,), "metadata": ({},), "service_tier": ("auto", "default"),
}
REFUSED_CHAT: dict[str, tuple] = {
    **REFUSED_COMMON, "tool_choice": ("none",), "parallel_tool_calls": (), "functions": ([],),
    "function_call": ("none",), "audio": (), "modalities": (["text"],), "prediction": (), "web_search_options": (),
    "reasoning_effort": (), "add_generation_prompt": (True,), "continue_final_message": (False,),
    "chat_template": (), "chat_template_kwargs": ({},), "documents": (), "echo": (False,),
}
REFUSED_MESSAGE: dict[str, tuple] = {"tool_calls": ([],), "tool_call_id": (), "function_call": (), "audio": (),
                                     "refusal": ()}

# What a union field expects, said plainly (pydantic reports one error per member instead).
EXPECTED_FORMS = {
    "prompt": "must be a string, a list of strings, a list of token ids (integers >= 0) or a list of such lists",
    "stop": f"must be a string or a list of at most {MAX_STOP} strings",
    "content": "must be a string or a non-empty list of {'type': 'text', 'text': ...} parts",
}


class RequestError(ValueError):
    """A request the server refuses; `param` names the offending field (OpenAI's error body)."""

    def __init__(self, message: str, param: str | None = None, status_code: int = 400,
                 error_type: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.status_code = status_code
        self.error_type = error_type
        self.code = code
        self.headers = headers


def _same_kind(a: Any, b: Any) -> bool:
    """JSON's kinds: 1 and 1.0 are one number, true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b)
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) or type(a) is type(b)


def _is_neutral(value: Any, neutral: tuple) -> bool:
    return value is None or any(_same_kind(value, n) and value == n for n in neutral)


def refuse_set_fields(extra: dict[str, Any] | None, refused: dict[str, tuple], prefix: str = "") -> None:
    """400 naming the first refused field that is set to a non-neutral value."""
    for name, value in (extra or {}).items():
        if name in refused and not _is_neutral(value, refused[name]):
            raise RequestError(f"{prefix}{name} is not supported by this server", param=f"{prefix}{name}")


# Conditional requirements, in the document as the server applies them (JSON Schema `anyOf`).
STREAM_OPTIONS_NEED_STREAM = {"anyOf": [{"properties": {"stream_options": {"type": "null"}}},
                                        {"required": ["stream"], "properties": {"stream": {"const": True}}}]}
TOP_LOGPROBS_NEED_LOGPROBS = {"anyOf": [{"properties": {"top_logprobs": {"type": "null"}}},
                                        {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}}]}
CONTENT_UNLESS_ASSISTANT = {"anyOf": [{"properties": {"role": {"const": "assistant"}}},
                                      {"required": ["content"], "properties": {"content": {"type": ["string", "array"]}}}]}


class StrictModel(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class StreamOptions(StrictModel):
    include_usage: bool = False


class SamplingFields(StrictModel):
    """The sampling fields shared by both endpoints (vLLM's extensions top_k and ignore_eos included)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"x-refused-fields": sorted(REFUSED_COMMON),
                                                                **STREAM_OPTIONS_NEED_STREAM})
    REFUSED: ClassVar[dict[str, tuple]] = REFUSED_COMMON

    model: Text | None = Field(default=None, description="model id from /v1/models (default: the served model)")
    max_tokens: whole_int(1) | None = Field(default=None, description=(
        "most tokens to generate; fewer when the context fills first (finish_reason 'length')"))
    temperature: float | None = Field(default=None, ge=0.0,
                                      description="0 is greedy; default: the model's (see /v1/models)")
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, description="default: the model's (see /v1/models)")
    top_k: whole_int(-1) | None = Field(default=None, description="vLLM extension; 0 or -1 disable it; "
                                                                  "default: the model's")
    n: whole_int(1, MAX_N) = Field(default=1, description="choices per prompt")
    stream: bool = False
    stream_options: StreamOptions | None = Field(default=None, description="only with stream: true")
    stop: NonEmptyText | Annotated[list[NonEmptyText], Field(max_length=MAX_STOP)] | None = None
    seed: whole_int(MIN_SEED, MAX_SEED) | None = None
    ignore_eos: bool = Field(default=False, description="vLLM extension: keep going past EOS")
    presence_penalty: Annotated[float, documented_as({"const": 0})] = Field(default=0.0, description="only 0 is supported")
    frequency_penalty: Annotated[float, documented_as({"const": 0})] = Field(default=0.0,
                                                                              description="only 0 is supported")
    user: Text | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def num_logprobs(self) -> int | None:
        """SamplingParams.logprobs: alternatives per token (0: the token's own), None: no logprobs."""
        return None

    def check_supported(self) -> None:
        """400 naming the first field that is set but cannot be honoured."""
        refuse_set_fields(self.model_extra, self.REFUSED)
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) != 0:
                raise RequestError(f"{name} is not supported by this server; send 0", param=name)
        if self.stream_options is not None and not self.stream:
            raise RequestError("stream_options is only allowed when stream is true", param="stream_options")
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if any(not s for s in stop):
            raise RequestError("stop strings must be non-empty", param="stop")

    def sampling_params(self, max_tokens: int, choice: int = 0,
                        defaults: SamplingDefaults = OPENAI_DEFAULTS) -> SamplingParams:
        """The engine's parameters for one choice (seeded choices get distinct seeds); fields the
        request leaves out take `defaults`."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        seed = None if self.seed is None else (self.seed + choice) % (MAX_SEED + 1)
        temperature = defaults.temperature if self.temperature is None else self.temperature
        top_p = defaults.top_p if self.top_p is None else self.top_p
        top_k = defaults.top_k if self.top_k is None else self.top_k
        try:
            return SamplingParams(max_tokens=max_tokens, temperature=0.0 if temperature < GREEDY_BELOW else temperature,
                                  top_p=top_p, top_k=max(top_k, 0), stop=stop, seed=seed, ignore_eos=self.ignore_eos,
                                  logprobs=self.num_logprobs())
        except ValueError as exc:
            raise RequestError(str(exc)) from exc

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(SamplingFields):
    """POST /v1/completions."""

    prompt: (NonEmptyText | TokenIds | Annotated[list[NonEmptyText], Field(min_length=1, max_length=MAX_PROMPTS)]
             | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)])
    echo: Annotated[bool, documented_as({"const": False})] = Field(default=False, description="only false is supported")
    logprobs: whole_int(0, MAX_COMPLETION_LOGPROBS) | None = Field(default=None, description=(
        "each token's log-probability and this many most likely alternatives (the model's raw "
        "distribution, before temperature, top-k and top-p)"))
    suffix: Annotated[Text | None, documented_as({"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 0}]})] = (
        Field(default=None, description="not supported: send null or ''"))

    def check_supported(self) -> None:
        super().check_supported()
        if self.echo:
            raise RequestError("echo is not supported by this server", param="echo")
        if self.suffix:
            raise RequestError("suffix is not supported by this server", param="suffix")

    def num_logprobs(self) -> int | None:
        return self.logprobs

    def prompts(self) -> list[str | list[int]]:
        """Each prompt as text or token ids (OpenAI accepts one or a list of either)."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if self.prompt and isinstance(self.prompt[0], int):
            return [list(self.prompt)]
        return list(self.prompt)


class TextPart(StrictModel):
    type: Literal["text"]
    text: Text


class ChatMessage(StrictModel):
    """One message; tool-calling fields (`REFUSED_MESSAGE`) are refused by name, as is `name`
    (the chat template cannot render it)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"x-refused-fields": sorted(REFUSED_MESSAGE),
                                                                **CONTENT_UNLESS_ASSISTANT})

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | Annotated[list[TextPart], Field(min_length=1)] | None = None
    name: Annotated[Text | None, documented_as({"type": "null"})] = Field(default=None,
                                                                          description="not supported: send null")

    @model_validator(mode="after")
    def _content_required(self) -> "ChatMessage":
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content")
        return self

    def check_supported(self, prefix: str) -> None:
        refuse_set_fields(self.model_extra, REFUSED_MESSAGE, prefix)
        if self.name is not None:
            raise RequestError(f"{prefix}name is not supported by this server", param=f"{prefix}name")

    def as_template_message(self) -> dict:
        """The {role, content} dict a chat template renders (text parts joined)."""
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": content or ""}


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    model_config = ConfigDict(json_schema_extra={"x-refused-fields": sorted(REFUSED_CHAT),
                                                 "allOf": [STREAM_OPTIONS_NEED_STREAM, TOP_LOGPROBS_NEED_LOGPROBS]})
    REFUSED: ClassVar[dict[str, tuple]] = REFUSED_CHAT

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: whole_int(1) | None = Field(default=None, description="as max_tokens (wins over it)")
    logprobs: bool = Field(default=False, description=(
        "each output token's log-probability (the model's raw distribution, before temperature, top-k and top-p)"))
    top_logprobs: whole_int(0, MAX_LOGPROBS) | None = Field(
        default=None, description="most likely alternatives per token; only with logprobs: true")
    tools: Annotated[list[dict] | None, documented_as({"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}]})] = (
        Field(default=None, description="not supported: send null or []"))
    response_format: Annotated[dict | None, documented_as({"anyOf": [
        {"type": "null"}, {"type": "object", "properties": {"type": {"const": "text"}}}]})] = Field(
        default=None, description="only {'type': 'text'} is supported")

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def num_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def check_supported(self) -> None:
        super().check_supported()
        if self.top_logprobs is not None and not self.logprobs:
            raise RequestError("top_logprobs is only allowed when logprobs is true", param="top_logprobs")
        if self.tools:
            raise RequestError("tools are not supported by this server", param="tools")
        if self.response_format is not None and self.response_format.get("type", "text") != "text":
            raise RequestError("only response_format {'type': 'text'} is supported", param="response_format")
        for index, message in enumerate(self.messages):
            message.check_supported(f"messages.{index}.")

    def template_messages(self) -> list[dict]:
        return [m.as_template_message() for m in self.messages]
