"""Running one HTTP request's prompts through the engine loop: admission, streaming, disconnects.

Admission is bounded: the server holds at most `max_num_seqs + max_queue` engine requests; one
more gets 429 with a Retry-After from the queue ahead of it (`serving/retry_after.py`). A client that goes
away (streaming or not) has every one of its engine requests aborted at once, which frees
their KV at every level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from jinja2 import TemplateError
from fastapi.responses import JSONResponse, StreamingResponse

from engine import SamplingParams
from serving.choices import Choice
from serving.errors import error_body
from serving.protocol import RequestError, SamplingFields
from serving.responses import ResponseFormat, sse

logger = logging.getLogger("serving")


@dataclass
class PreparedPrompt:
    token_ids: list[int]
    max_tokens: int


def prepare_prompt(state, prompt, body: SamplingFields) -> PreparedPrompt:
    """Tokenise (400 for a prompt the engine refuses: empty, out-of-vocabulary ids, filling the
    context) and cap max_tokens at the room the context leaves, as an upper bound should be."""
    is_chat = isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], dict)
    try:
        ids = state.engine.encode_prompt(prompt)
    except TemplateError as exc:        # the chat template's own refusal (e.g. roles must alternate) is for the user
        raise RequestError(f"the chat template refused the messages: {exc}", param="messages") from exc
    except ValueError as exc:           # the engine's own checks: empty, ids out of range, too long
        raise RequestError(f"invalid prompt: {exc}", param="messages" if is_chat else "prompt") from exc
    except Exception as exc:            # a tokenizer refusing the input: its message is about its internals
        logger.debug("tokenizer refused a prompt: %r", exc)
        raise RequestError("the tokenizer could not encode this " + ("conversation" if is_chat else "prompt"),
                           param="messages" if is_chat else "prompt") from exc
    requested = body.requested_max_tokens()
    wanted = state.config.default_max_tokens if requested is None else requested
    room = state.config.max_model_len - len(ids)        # >= 1: encode_prompt refuses a prompt that fills the context
    return PreparedPrompt(ids, max(1, min(wanted, room)))


async def prepare_prompts(state, prompts: list, body: SamplingFields) -> list[PreparedPrompt]:
    """`prepare_prompt` for each prompt on the state's bounded tokenizer pool, off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(
        state.prepare_pool(), lambda: [prepare_prompt(state, prompt, body) for prompt in prompts])


def admit(state, num_requests: int) -> None:
    """Refuse with 503 while draining and 429 when the bounded queue is full. A request with more
    sequences than the server holds (n x prompts, both bounded by the document) waits for an
    idle server instead of being refused outright: what the document allows is served."""
    if state.is_draining:
        state.metrics.observe_rejection("draining")
        raise RequestError("the server is shutting down", status_code=503, error_type="service_unavailable",
                           headers={"Retry-After": "5"})
    state.retry_promises.observe_arrival()
    in_flight = state.engine_loop.num_in_flight
    if in_flight and in_flight + num_requests > state.config.max_in_flight:
        state.metrics.observe_rejection("queue_full")
        raise RequestError("the server is overloaded: the request queue is full; retry later",
                           status_code=429, error_type="rate_limit_error", code="queue_full",
                           headers={"Retry-After": str(state.retry_promises.refuse(
                               in_flight + num_requests - state.config.max_in_flight))})


async def generate(state, http_request: Request, body: SamplingFields, prompts: list[PreparedPrompt],
                   kind: str) -> JSONResponse | StreamingResponse:
    arrival = time.monotonic()
    params: list[tuple[int, SamplingParams]] = []
    for p_index, prompt in enumerate(prompts):
        params += [(p_index, body.sampling_params(prompt.max_tokens, choice, state.sampling_defaults))
                   for choice in range(body.n)]
    admit(state, len(params))
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    response_id = f"{prefix}-{uuid.uuid4().hex}"
    choices = []
    for index, (p_index, sampling) in enumerate(params):
        stream = state.engine_loop.submit(f"{response_id}-{index}", prompts[p_index].token_ids, sampling)
        choices.append(Choice(index, p_index, stream, state.tokenizer, sampling.stop, arrival,
                              wants_logprobs=sampling.logprobs is not None))
    fmt = ResponseFormat(kind, response_id, state.model_name, state.tokenizer)
    if body.stream:
        return StreamingResponse(_stream(state, choices, fmt, body.include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await _complete(state, http_request, choices, fmt)


def _report_spec(state, choice: Choice) -> None:
    if state.spec_metrics is not None and choice.finish_reason in ("stop", "length"):
        choice.spec_decode = state.spec_metrics.report(choice.request_id, choice.stats)


def _finish(state, choices: list[Choice]) -> None:
    """Abort what is unfinished (client gone) and record every choice's latencies."""
    now = time.monotonic()
    for choice in choices:
        if not choice.is_finished:
            state.engine_loop.abort(choice.request_id)
            choice.finish("abort", "client disconnected", now)
        ttft = None if choice.first_token_time is None else choice.first_token_time - choice.arrival
        e2e = (choice.finish_time or now) - choice.arrival
        state.metrics.observe_request(choice.finish_reason, choice.num_prompt_tokens, ttft, e2e, choice.gaps_s)


async def _wait_for_disconnect(http_request: Request) -> None:
    while True:
        message = await http_request.receive()
        if message["type"] == "http.disconnect":
            return


async def _complete(state, http_request: Request, choices: list[Choice], fmt: ResponseFormat) -> JSONResponse:
    async def run_all() -> None:
        async def run(choice: Choice) -> None:
            while not choice.is_finished:
                await choice.next_delta()
            _report_spec(state, choice)
        await asyncio.gather(*(run(c) for c in choices))

    work = asyncio.create_task(run_all())
    watcher = asyncio.create_task(_wait_for_disconnect(http_request))
    try:
        await asyncio.wait([work, watcher], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, watcher):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.gather(work, watcher, return_exceptions=True)
        _finish(state, choices)
    if work.done() and not work.cancelled() and work.exception() is not None:
        raise work.exception()
    failed = [c for c in choices if c.finish_reason == "error"]
    if failed:
        return JSONResponse(error_body(f"generation failed: {failed[0].error}", "internal_error"), status_code=500)
    return JSONResponse(fmt.full(choices))


async def _stream(state, choices: list[Choice], fmt: ResponseFormat, include_usage: bool) -> AsyncIterator[str]:
    """SSE chunks as tokens arrive, then usage (if asked) and `data: [DONE]`.

    Starlette cancels this generator when the client disconnects; `finally` aborts the requests.
    """
    # (choice, text, the logprobs of the tokens that text comes from, is its last event)
    events: asyncio.Queue[tuple[Choice, str, list | None, bool]] = asyncio.Queue()

    async def pump(choice: Choice) -> None:
        while not choice.is_finished:
            delta = await choice.next_delta()
            if choice.is_finished:
                _report_spec(state, choice)
            if delta or choice.is_finished:
                events.put_nowait((choice, delta, choice.take_logprobs(), choice.is_finished))

    tasks = [asyncio.create_task(pump(c)) for c in choices]
    try:
        if fmt.is_chat:
            for choice in choices:
                yield sse(fmt.chunk(choice.index, None, role=True))
        remaining = len(choices)
        while remaining:
            choice, delta, entries, is_last = await events.get()
            logprobs = fmt.logprobs.write(choice.index, entries)
            if is_last:
                remaining -= 1
                if choice.finish_reason == "error":
                    if delta:
                        yield sse(fmt.chunk(choice.index, delta, logprobs=logprobs))
                    yield sse(error_body(f"generation failed: {choice.error}", "internal_error"))
                    continue
            yield sse(fmt.chunk(choice.index, delta, choice.finish_reason if is_last else None,
                                spec_decode=choice.spec_decode if is_last else None, logprobs=logprobs))
        if include_usage:
            yield sse(fmt.usage_chunk(choices))
        yield sse("[DONE]")
    finally:
        for task in tasks:
            task.cancel()
        _finish(state, choices)
