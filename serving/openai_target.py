"""The load generator's side of the OpenAI API: one streamed request, timed at the client.

Works against any OpenAI-compatible server (SpecRoute, vLLM, llama.cpp's llama-server, ...).
It reads only what the OpenAI API defines: streamed `choices[].text` / `choices[].delta.content`
and the final `usage` chunk (`stream_options.include_usage`). SpecRoute's speculative-decoding
counters in `usage` (`num_draft_tokens`, `num_accepted_tokens`) are read when they are there and
left None when they are not, so the report can say n/a instead of 0.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import httpx

from env.prompt_sources import Prompt

COMPLETIONS, CHAT_COMPLETIONS = "/v1/completions", "/v1/chat/completions"
ENDPOINTS = (COMPLETIONS, CHAT_COMPLETIONS)


@dataclass
class RequestResult:
    """What the client saw of one request. Token counts come from the server's `usage`; a server
    that sends none gets its output counted as one token per streamed text chunk."""

    status: int = 0
    ttft_s: float | None = None
    e2e_s: float = 0.0
    itl_s: list[float] = field(default_factory=list)
    num_output_tokens: int = 0
    num_prompt_tokens: int = 0
    num_draft_tokens: int | None = None         # SpecRoute only: None when the server does not say
    num_accepted_tokens: int | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error

    @property
    def tpot_s(self) -> float | None:
        if not self.ok or self.ttft_s is None or self.num_output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.num_output_tokens - 1)


def auth_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def fetch_model_name(client: httpx.AsyncClient) -> str:
    """The first model the server lists at GET /v1/models (what `vllm bench serve` does without --model)."""
    response = await client.get("/v1/models", timeout=10)
    response.raise_for_status()
    models = response.json().get("data") or []
    if not models:
        raise ValueError(f"{client.base_url}v1/models lists no model; pass --model")
    return models[0]["id"]


def request_path_and_body(prompt: Prompt, endpoint: str, max_prompt_chars: int) -> tuple[str, dict]:
    """Where a prompt goes and its prompt part: `endpoint` if set, else chat for chat prompts."""
    path = endpoint or (CHAT_COMPLETIONS if prompt.is_chat else COMPLETIONS)
    messages = getattr(prompt, "messages", None)
    if path == COMPLETIONS:
        return path, {"prompt": prompt.text[:max_prompt_chars]}
    if messages is None:
        messages = ({"role": "user", "content": prompt.text[:max_prompt_chars]},)
    return path, {"messages": list(messages)}


def _observe_chunk(result: RequestResult, chunk: dict, start: float, last: float) -> float:
    """Record one SSE chunk's text arrival and usage; returns the time of the latest text."""
    if "error" in chunk:
        error = chunk["error"]
        result.error = error.get("message", "error") if isinstance(error, dict) else str(error)
    usage = chunk.get("usage")
    if usage:
        result.num_output_tokens = usage.get("completion_tokens", result.num_output_tokens)
        result.num_prompt_tokens = usage.get("prompt_tokens", 0)
        result.num_draft_tokens = usage.get("num_draft_tokens")
        result.num_accepted_tokens = usage.get("num_accepted_tokens")
    for choice in chunk.get("choices") or []:
        piece = choice.get("text") or (choice.get("delta") or {}).get("content")
        if piece:
            now = time.perf_counter()
            if result.ttft_s is None:
                result.ttft_s = now - start
            else:
                result.itl_s.append(now - last)
            last = now
            if not usage:
                result.num_output_tokens += 1          # replaced by usage when the server sends it
    return last


async def send_request(client: httpx.AsyncClient, path: str, body: dict, timeout_s: float) -> RequestResult:
    """POST one streaming request and time it: TTFT, the gaps between text chunks, E2E."""
    result = RequestResult()
    start = last = time.perf_counter()
    try:
        async with client.stream("POST", path, json=body, timeout=timeout_s) as response:
            result.status = response.status_code
            if response.status_code != 200:
                result.error = (await response.aread()).decode(errors="replace")[:200]
                return result
            async for line in response.aiter_lines():
                data = line[len("data:"):].strip() if line.startswith("data:") else ""
                if data and data != "[DONE]":
                    last = _observe_chunk(result, json.loads(data), start, last)
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.e2e_s = time.perf_counter() - start
    return result
