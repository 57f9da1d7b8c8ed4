"""OpenAI request bodies as strict pydantic models, and the SamplingParams they ask for.

Strict means what a client sends is what it gets: `"0.5"` is not a number, `1.0` is not an
integer, `true` is not 1, and NaN/inf are refused (Python's json accepts `NaN`; we do not).
Fields OpenAI defines that the engine cannot honour are refused with a 400 naming the field,
rather than silently ignored; unknown extra fields are ignored, as OpenAI's servers do.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine import SamplingParams

MAX_N = 16
GREEDY_BELOW = 1e-5          # temperatures this small are greedy (as vLLM does): dividing by them overflows
MAX_STOP = 16
MIN_SEED, MAX_SEED = -(2 ** 63), 2 ** 64 - 1    # the range torch.Generator.manual_seed accepts


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


class StrictModel(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class StreamOptions(StrictModel):
    include_usage: bool = False


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class SamplingFields(StrictModel):
    """The sampling fields shared by both endpoints (vLLM's extensions top_k and ignore_eos included)."""

    model: str | None = Field(default=None, description="model id from /v1/models (default: the served model)")
    max_tokens: int | None = Field(default=None, ge=1, description="most tokens to generate")
    temperature: float = Field(default=1.0, ge=0.0, description="0 is greedy")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=-1, description="vLLM extension; 0 or -1 disable it")
    n: int = Field(default=1, ge=1, le=MAX_N, description="choices per prompt")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    seed: int | None = Field(default=None, ge=MIN_SEED, le=MAX_SEED)
    ignore_eos: bool = Field(default=False, description="vLLM extension: keep going past EOS")
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    user: str | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def sampling_params(self, max_tokens: int, choice: int = 0) -> SamplingParams:
        """The engine's parameters for one choice (seeded choices get distinct seeds)."""
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) != 0:
                raise RequestError(f"{name} is not supported by this server; send 0", param=name)
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if any(not s for s in stop):
            raise RequestError("stop strings must be non-empty", param="stop")
        seed = None if self.seed is None else (self.seed + choice) % (MAX_SEED + 1)
        try:
            temperature = 0.0 if self.temperature < GREEDY_BELOW else self.temperature
            return SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=self.top_p,
                                  top_k=max(self.top_k, 0), stop=stop, seed=seed, ignore_eos=self.ignore_eos)
        except ValueError as exc:
            raise RequestError(str(exc)) from exc

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(SamplingFields):
    """POST /v1/completions."""

    prompt: str | TokenIds | Annotated[list[str], Field(min_length=1)] | Annotated[list[TokenIds], Field(min_length=1)]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=5)
    suffix: str | None = None

    def prompts(self) -> list[str | list[int]]:
        """Each prompt as text or token ids (OpenAI accepts one or a list of either)."""
        if self.echo:
            raise RequestError("echo is not supported by this server", param="echo")
        if self.logprobs:
            raise RequestError("logprobs are not supported by this server", param="logprobs")
        if self.suffix:
            raise RequestError("suffix is not supported by this server", param="suffix")
        if isinstance(self.prompt, str):
            return [self.prompt]
        if self.prompt and isinstance(self.prompt[0], int):
            return [list(self.prompt)]
        return list(self.prompt)


class TextPart(StrictModel):
    type: Literal["text"]
    text: str


class ChatMessage(StrictModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | Annotated[list[TextPart], Field(min_length=1)] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _content_required(self) -> "ChatMessage":
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content")
        return self

    def as_template_message(self) -> dict:
        """The {role, content} dict a chat template renders (text parts joined)."""
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": content or ""}


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict] | None = None
    response_format: dict | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def template_messages(self) -> list[dict]:
        if self.logprobs or self.top_logprobs:
            raise RequestError("logprobs are not supported by this server", param="logprobs")
        if self.tools:
            raise RequestError("tools are not supported by this server", param="tools")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise RequestError("only response_format {'type': 'text'} is supported", param="response_format")
        return [m.as_template_message() for m in self.messages]
