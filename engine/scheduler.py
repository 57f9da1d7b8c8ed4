"""Continuous batching: the only place that changes a request's status and output.

Requests wait in FIFO order and join the running batch between steps while there is room
(`max_num_seqs` rows, `max_num_tokens` tokens); they leave when finished or aborted.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from engine.config import EngineConfig
from engine.logprobs import TokenLogprob
from engine.sequence import FinishReason, Request, RequestStatus
from engine.stop_strings import find_stop, num_stable_chars


class Scheduler:
    def __init__(self, config: EngineConfig, eos_token_ids: set[int], detokenize: Callable[[list[int]], str] | None):
        self.config = config
        self.eos_token_ids = eos_token_ids
        self.detokenize = detokenize
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}

    def add(self, request: Request) -> None:
        if request.request_id in self.requests:
            raise ValueError(f"request id {request.request_id!r} is already in use")
        self.requests[request.request_id] = request
        self.waiting.append(request)

    @property
    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def admit(self) -> list[Request]:
        """Move waiting requests into the running batch while they fit; return the batch."""
        used = sum(r.num_tokens + r.params.max_tokens for r in self.running)
        while self.waiting and len(self.running) < self.config.max_num_seqs:
            candidate = self.waiting[0]
            need = candidate.num_tokens + candidate.params.max_tokens
            if self.running and used + need > self.config.max_num_tokens:
                break
            self.waiting.popleft()
            candidate.status = RequestStatus.RUNNING
            self.running.append(candidate)
            used += need
        return list(self.running)

    def commit(self, request: Request, tokens: list[int], now: float | None = None,
               logprobs: list[TokenLogprob] | None = None) -> list[int]:
        """Append tokens one at a time until a stop condition; return the ones appended. A
        request that asked for logprobs keeps each appended token's (`logprobs[i]` is tokens[i]'s)."""
        now = time.monotonic() if now is None else now
        appended: list[int] = []
        for i, token in enumerate(tokens):
            request.output_token_ids.append(token)
            if request.output_logprobs is not None and logprobs is not None:
                request.output_logprobs.append(logprobs[i])
            appended.append(token)
            reason = self._stop_reason(request, token)
            if reason is not None:
                self.finish(request, reason, now)
                break
        if appended and request.first_token_time is None:
            request.first_token_time = now
        return appended

    def _stop_reason(self, request: Request, token: int) -> FinishReason | None:
        params = request.params
        if not params.ignore_eos and token in self.eos_token_ids:
            return FinishReason.STOP
        if params.stop and self.detokenize is not None:
            text = self.detokenize(request.output_token_ids)
            start = find_stop(text, params.stop, request.num_stop_scanned)
            request.num_stop_scanned = num_stable_chars(text)
            if start is not None:
                request.stop_text_end = start
                return FinishReason.STOP
        if len(request.output_token_ids) >= params.max_tokens:
            return FinishReason.LENGTH
        if request.num_tokens >= self.config.max_model_len:
            return FinishReason.LENGTH
        return None

    def finish(self, request: Request, reason: FinishReason, now: float | None = None, error: str | None = None) -> None:
        if request.is_finished:
            return
        request.status = RequestStatus.FINISHED
        request.finish_reason = reason
        request.error = error
        request.finish_time = time.monotonic() if now is None else now
        if request in self.running:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)

    def pop_finished(self, request: Request) -> None:
        self.requests.pop(request.request_id, None)
