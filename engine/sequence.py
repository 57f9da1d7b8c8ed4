"""A request's state as the scheduler and the speculative step see it."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import torch

from engine.logprobs import TokenLogprob
from engine.sampling import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class FinishReason(enum.Enum):
    STOP = "stop"          # EOS or a stop string
    LENGTH = "length"      # max_tokens or the context length
    ABORT = "abort"        # the caller aborted it
    ERROR = "error"        # it failed alone; the batch went on


@dataclass
class SpecStats:
    """Per-request speculation counters (vLLM's spec-decode metric names)."""

    num_steps: int = 0
    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    accepted_histogram: list[int] = field(default_factory=list)

    def observe_step(self, num_proposed: int, num_accepted: int) -> None:
        self.num_steps += 1
        if num_proposed:
            self.num_drafts += 1
            self.num_draft_tokens += num_proposed
            self.num_accepted_tokens += num_accepted
            while len(self.accepted_histogram) <= num_accepted:
                self.accepted_histogram.append(0)
            self.accepted_histogram[num_accepted] += 1

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0


@dataclass(eq=False)      # a request is an entity: compared (and hashed) by identity
class Request:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival_time: float = field(default_factory=time.monotonic)
    category: str = ""
    output_token_ids: list[int] = field(default_factory=list)
    output_logprobs: list[TokenLogprob] | None = None     # one per output token when params.logprobs is set
    status: RequestStatus = RequestStatus.WAITING
    finish_reason: FinishReason | None = None
    error: str | None = None
    stop_text_end: int | None = None        # where a stop string starts in the output text
    num_stop_scanned: int = 0               # output text characters already searched for stop strings
    level_slots: dict[str, int] = field(default_factory=dict)
    stats: SpecStats = field(default_factory=SpecStats)
    first_token_time: float | None = None
    finish_time: float | None = None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if self.params.seed is not None:
            self.generator = torch.Generator().manual_seed(self.params.seed)
        else:
            self.generator = torch.Generator()
            self.generator.seed()
        if self.params.logprobs is not None:
            self.output_logprobs = []

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def is_finished(self) -> bool:
        return self.status is RequestStatus.FINISHED


@dataclass
class RequestOutput:
    """What a caller sees after a step: tokens added in this step and, at the end, the text.

    When the request asked for logprobs, `logprobs` holds one `TokenLogprob` per output token
    so far and `new_logprobs` those of `new_token_ids`; otherwise both are None.
    """

    request_id: str
    new_token_ids: list[int]
    output_token_ids: list[int]
    finished: bool
    finish_reason: FinishReason | None
    stats: SpecStats
    text: str | None = None
    error: str | None = None
    logprobs: list[TokenLogprob] | None = None
    new_logprobs: list[TokenLogprob] | None = None
