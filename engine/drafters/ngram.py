"""Prompt-lookup decoding: copy what followed the last occurrence of the context's suffix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.drafters.base import ModelFreeDrafter


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

    def propose(self, request_id: str, context: Sequence[int], k: int) -> list[int]:
        if k <= 0:
            return []
        tokens = np.asarray(context, dtype=np.int64)
        length = len(tokens)
        for n in range(min(self.max_match, length - 1), self.min_match - 1, -1):
            suffix = tokens[length - n:]
            # windows[i] = tokens[i : i + n] for every start that leaves a following token
            windows = np.lib.stride_tricks.sliding_window_view(tokens[: length - 1], n)
            hits = np.flatnonzero((windows == suffix).all(axis=1))
            if hits.size:
                start = int(hits[-1]) + n
                return tokens[start: start + k].tolist()
        return []
