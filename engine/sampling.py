"""Sampling parameters and the logits -> probabilities transform every level applies."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from engine.logprobs import MAX_LOGPROBS


@dataclass
class SamplingParams:
    """What a request asks for; checked on construction so bad input fails before it queues.

    temperature 0 means greedy. top_k 0 and top_p 1 disable those filters. `logprobs` asks for
    each output token's log-probability and that many most likely alternatives (0: the token's
    own only; None: nothing, and nothing is computed); they are of the target's raw distribution,
    before temperature, top-k and top-p (as vLLM reports them), see engine/logprobs.py.
    """

    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    ignore_eos: bool = False
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not _finite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not _finite(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if self.logprobs is not None and (isinstance(self.logprobs, bool) or not isinstance(self.logprobs, int)
                                          or not 0 <= self.logprobs <= MAX_LOGPROBS):
            raise ValueError(f"logprobs must be None or an integer in [0, {MAX_LOGPROBS}], got {self.logprobs!r}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop must be a list of non-empty strings")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def probs_from_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """[n, vocab] logits -> [n, vocab] probabilities after temperature, top-k and top-p."""
    logits = logits.float() / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = logits.topk(params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    if params.top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= params.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def probs_for_rows(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """[n, ..., vocab] logits -> probabilities, row i through params[i]'s transform.

    Rows that share temperature, top-k and top-p go through one vectorised call.
    """
    probs = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for row, p in enumerate(params):
        groups[(p.temperature, p.top_k, p.top_p)].append(row)
    for rows in groups.values():
        index = torch.as_tensor(rows, device=logits.device)
        chunk = logits[index]
        probs[index] = probs_from_logits(chunk.reshape(-1, chunk.shape[-1]), params[rows[0]]).reshape(chunk.shape)
    return probs


def sample_from(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: [n, vocab] non-negative weights and [n] uniforms in [0, 1) -> [n] tokens.

    Deterministic given the uniforms, so a batch can be sampled at once while every row's
    randomness comes from its own seeded generator. Never returns a zero-weight token.
    """
    cdf = probs.cumsum(dim=-1)                                                    # [n, vocab]
    threshold = (uniforms * cdf[:, -1])[:, None]                                  # [n, 1]
    tokens = torch.searchsorted(cdf, threshold, right=True)[:, 0]                 # [n]
    vocab = probs.shape[-1]
    last_positive = vocab - 1 - (probs > 0).flip(-1).int().argmax(dim=-1)         # [n]
    return torch.minimum(tokens, last_positive)
