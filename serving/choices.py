"""One choice of a response as the handler sees it: engine outputs in, text deltas and timings out."""

from __future__ import annotations

import time

from engine import FinishReason, RequestOutput
from engine.logprobs import TokenLogprob
from engine.sequence import SpecStats
from serving.detokenizer import IncrementalDetokenizer
from serving.engine_loop import RequestStream, StreamEnd

FINISH_REASONS = {FinishReason.STOP: "stop", FinishReason.LENGTH: "length",
                  FinishReason.ABORT: "abort", FinishReason.ERROR: "error"}


class Choice:
    """Follows one engine request: its text so far, finish reason, counts and latencies."""

    def __init__(self, index: int, prompt_index: int, stream: RequestStream, tokenizer, stop: list[str],
                 arrival: float, wants_logprobs: bool = False):
        self.index = index
        self.prompt_index = prompt_index
        self.stream = stream
        self.detokenizer = IncrementalDetokenizer(tokenizer, stop)
        self.arrival = arrival
        self.text = ""
        self.num_output_tokens = 0
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.stats = SpecStats()
        self.spec_decode: dict | None = None      # per-request speculation metrics, when the server reports them
        self.first_token_time: float | None = None
        self.last_token_time: float | None = None
        self.finish_time: float | None = None
        self.gaps_s: list[float] = []
        self.logprobs: list[TokenLogprob] | None = [] if wants_logprobs else None   # every output token's
        self.num_logprobs_taken = 0

    @property
    def request_id(self) -> str:
        return self.stream.request_id

    @property
    def num_prompt_tokens(self) -> int:
        return self.stream.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.finish_reason is not None

    async def next_delta(self) -> str:
        """Wait for the next engine output; return the text it adds (possibly empty)."""
        item = await self.stream.next()
        now = time.monotonic()
        if isinstance(item, StreamEnd):
            self.finish(FINISH_REASONS[item.reason], item.error, now)
            return ""
        return self.absorb(item, now)

    def absorb(self, output: RequestOutput, now: float) -> str:
        if output.new_token_ids:
            if self.first_token_time is None:
                self.first_token_time = now
            elif self.last_token_time is not None:
                self.gaps_s.append(now - self.last_token_time)
            self.last_token_time = now
        self.num_output_tokens = len(output.output_token_ids)
        self.stats = output.stats
        if self.logprobs is not None and output.new_logprobs is not None:
            self.logprobs.extend(output.new_logprobs)
        delta = self.detokenizer.push(output.output_token_ids, output.finished, output.text)
        self.text += delta
        if output.finished:
            self.finish(FINISH_REASONS.get(output.finish_reason, "stop"), output.error, now)
        return delta

    def take_logprobs(self) -> list[TokenLogprob] | None:
        """The logprobs not taken yet (for the next chunk, or all of them for a full body);
        None when the request did not ask for logprobs."""
        if self.logprobs is None:
            return None
        taken = self.logprobs[self.num_logprobs_taken:]
        self.num_logprobs_taken = len(self.logprobs)
        return taken

    def finish(self, reason: str, error: str | None, now: float) -> None:
        self.finish_reason = reason
        self.error = error
        self.finish_time = now


def usage_of(choices: list[Choice]) -> dict:
    """OpenAI's usage, plus the speculation counters of these requests (vLLM's metric names)."""
    prompt = sum({c.prompt_index: c.num_prompt_tokens for c in choices}.values())   # once per prompt, not per choice
    completion = sum(c.num_output_tokens for c in choices)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "num_drafts": sum(c.stats.num_drafts for c in choices),
        "num_draft_tokens": sum(c.stats.num_draft_tokens for c in choices),
        "num_accepted_tokens": sum(c.stats.num_accepted_tokens for c in choices),
    }
