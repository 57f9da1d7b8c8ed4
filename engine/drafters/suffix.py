"""Suffix-match drafting over the prompt, the output so far and earlier outputs (SuffixDecoding).

Each proposed token is the most frequent continuation of the longest matching suffix, counted
in this request's tokens and in a bounded history of finished outputs (arXiv 2411.04975).
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Sequence

from engine.drafters.base import ModelFreeDrafter

NgramIndex = dict[tuple[int, ...], Counter]


def _index_into(index: NgramIndex, tokens: Sequence[int], start: int, max_match: int, sign: int = 1) -> None:
    """Count, for every n-gram ending before position i >= start, the token at i."""
    for i in range(max(start, 1), len(tokens)):
        for n in range(1, min(max_match, i) + 1):
            key = tuple(tokens[i - n: i])
            counter = index[key]
            counter[tokens[i]] += sign
            if counter[tokens[i]] <= 0:
                del counter[tokens[i]]
                if not counter:
                    del index[key]


class SuffixDrafter(ModelFreeDrafter):
    name = "suffix"

    def __init__(self, max_match: int = 6, min_match: int = 1, max_history: int = 256,
                 min_share: float = 0.3):
        if not 1 <= min_match <= max_match:
            raise ValueError(f"suffix needs 1 <= min_match <= max_match, got {min_match}, {max_match}")
        self.max_match = max_match
        self.min_match = min_match
        self.min_share = min_share
        self.history: deque[tuple[int, ...]] = deque()
        self.max_history = max_history
        self.history_index: NgramIndex = defaultdict(Counter)
        self.request_index: dict[str, NgramIndex] = {}
        self.request_indexed: dict[str, int] = {}

    def _request_index(self, request_id: str, context: Sequence[int]) -> NgramIndex:
        index = self.request_index.setdefault(request_id, defaultdict(Counter))
        done = self.request_indexed.get(request_id, 0)
        if len(context) < done:       # context shrank: a new request reused the id
            index.clear()
            done = 0
        _index_into(index, context, done, self.max_match)
        self.request_indexed[request_id] = len(context)
        return index

    def _next_token(self, local: NgramIndex, tokens: list[int]) -> int | None:
        for n in range(min(self.max_match, len(tokens)), self.min_match - 1, -1):
            key = tuple(tokens[len(tokens) - n:])
            counts = Counter(local.get(key, {}))
            counts.update(self.history_index.get(key, {}))
            if counts:
                token, count = counts.most_common(1)[0]
                return token if count / sum(counts.values()) >= self.min_share else None
        return None

    def propose(self, request_id: str, context: Sequence[int], k: int) -> list[int]:
        """Token by token while some suffix has a continuation holding at least `min_share` of
        its counts, up to k: the draft stops where the evidence does."""
        if k <= 0:
            return []
        local = self._request_index(request_id, context)
        tokens = list(context[-self.max_match:])
        proposal: list[int] = []
        while len(proposal) < k:
            token = self._next_token(local, tokens)
            if token is None:
                break
            proposal.append(token)
            tokens = tokens[1:] + [token] if len(tokens) >= self.max_match else tokens + [token]
        return proposal

    def finish(self, request_id: str, output: Sequence[int]) -> None:
        self.request_index.pop(request_id, None)
        self.request_indexed.pop(request_id, None)
        if not output:
            return
        entry = tuple(output)
        self.history.append(entry)
        _index_into(self.history_index, entry, 0, self.max_match)
        if len(self.history) > self.max_history:
            _index_into(self.history_index, self.history.popleft(), 0, self.max_match, sign=-1)
