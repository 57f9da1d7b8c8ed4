"""Prompt-lookup decoding: copy what followed the last occurrence of the context's suffix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.drafters.base import SIGNAL_LEVELS, ModelFreeDrafter


class NgramDrafter(ModelFreeDrafter):
    """Match the last n tokens (n from `max_match` down to `min_match`) earlier in the context
    and propose the tokens that followed the most recent match (as in prompt lookup decoding,
    arXiv 2304.04487, and vLLM's ngram proposer)."""

    name = "ngram"

    def __init__(self, max_match: int = 3, min_match: int = 1):
        if not 1 <= min_match <= max_match:
            raise ValueError(f"ngram needs 1 <= min_match <= max_match, got {min_match}, {max_match}")
        self.max_match = max_match
        self.min_match = min_match

    def _match(self, context: Sequence[int]) -> tuple[np.ndarray, int, int]:
        """(tokens, end of the chosen match, its length); length 0 when nothing matches."""
        tokens = np.asarray(context, dtype=np.int64)
        length = len(tokens)
        max_n = min(self.max_match, length - 1)
        if max_n < self.min_match:
            return tokens, -1, 0
        # every earlier position holding the last token ends a match; extend them backwards
        ends = np.flatnonzero(tokens[: length - 1] == tokens[-1])                 # [num_candidates]
        matched = np.ones(ends.size, dtype=np.int64)
        alive = np.ones(ends.size, dtype=bool)
        for n in range(1, max_n):
            alive &= ends >= n
            alive[alive] = tokens[ends[alive] - n] == tokens[length - 1 - n]
            matched += alive
        if not ends.size or matched.max() < self.min_match:
            return tokens, -1, 0
        best = int(matched.max())
        return tokens, int(ends[np.flatnonzero(matched == best)[-1]]), best     # longest, then most recent

    def propose(self, request_id: str, context: Sequence[int], k: int) -> list[int]:
        """What followed the match, up to k tokens: fewer when the match sits near the end of
        the context (the copied text runs out), none without a match."""
        if k <= 0:
            return []
        tokens, end, matched = self._match(context)
        return tokens[end + 1: end + 1 + k].tolist() if matched else []

    def signal(self, request_id: str, context: Sequence[int]) -> int:
        """The matched n-gram's length, scaled to 0..SIGNAL_LEVELS: a 3-gram match repeats text
        far more reliably than a single repeated token."""
        matched = self._match(context)[2]         # a match always ends before the last token
        return max(1, round(SIGNAL_LEVELS * matched / self.max_match)) if matched else 0
