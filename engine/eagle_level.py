"""The EAGLE level: a ModelLevel whose model is an EAGLE head (engine/eagle_head.py) on the target's features.

Position p of this level's cache holds the pair (f_p, x_{p+1}): the target's final hidden state at
committed position p and the committed token after it. Its slot bookkeeping, catch-up plan, sync
and rollback are ModelLevel's, over the token sequence x_1, x_2, ... (the committed tokens shifted
by one), so the invariant reads the same: after `sync` a slot holds the pairs of a prefix of
the committed tokens that stops short of the last one, and every pair it keeps was fed with the
target's own feature (pairs fed with the head's predicted features while drafting are always
rolled back, even where the drafted token was accepted).

Where the features come from: the target level's runner keeps the final hidden state of every
position it feeds in its KV cache (`keep_features`), in every step whatever the chain (plain
steps, other chains, catch-up prefills), at the cost of one indexed copy per forward; its
rollback is the cache's length move, so it holds exactly the features of the committed positions
it has fed. Before this level feeds anything, the target catches up (`catch_up_all`: every
committed token but the last), so features exist for every pair up to the last committed token.
After a rollback or a chain switch this level has simply fallen behind: its catch-up feeds the
missing pairs (f_p from the target's cache, x_{p+1} committed) in the budgeted forwards of
ModelLevel, then the pair of the last committed token gives the law of the next one.

Drafting is autoregressive: each drafted token is fed with the feature the head predicted at the
pair before it. Verifying a proposal from below (a model-free drafter or another model) needs the
head's law at every proposed position, each of which needs the feature predicted at the previous
one, so `verify_logits` feeds the proposal one token per forward (m + 1 small forwards for m
tokens). A row whose context is a single token has no pair yet: it drafts nothing and, when this
level verifies, gets uniform logits (the level's output then follows that stated law, so the
target's verification keeps the step lossless).
"""

from __future__ import annotations

import torch

from engine.config import EngineConfig
from engine.levels import Draft, ModelLevel
from engine.runner import ModelRunner
from engine.sequence import Request


class EagleLevel(ModelLevel):
    """Args: as ModelLevel's, plus `target`, the level whose runner keeps features (keep_features)."""

    def __init__(self, name: str, runner: ModelRunner, target: ModelLevel,
                 catch_up_threshold: int = EngineConfig.catch_up_threshold,
                 token_budget: int = EngineConfig.token_budget):
        if runner.feature_fc is None:
            raise ValueError(f"level {name!r}: an EAGLE level needs an EAGLE head (engine/eagle_head.py)")
        if target.cache.features is None:
            raise ValueError(f"level {name!r}: the target's runner must keep its features (keep_features=True)")
        super().__init__(name, runner, catch_up_threshold, token_budget)
        self.target = target
        self.num_real: dict[int, int] = {}                 # slot -> leading pairs fed with target features
        self.predicted: dict[int, torch.Tensor] = {}       # slot -> feature predicted at its last pair [hidden]
        self.target_slots: dict[int, int] = {}             # slot -> the request's target slot

    def _pending(self, request: Request) -> list[int]:
        return request.all_token_ids[self.committed_length(request) + 1:]

    def _aligned_committed(self, request: Request) -> list[int]:
        return request.all_token_ids[1:]

    def _reusable_length(self, slot: int) -> int:
        return self.num_real.get(slot, 0)

    def _prepare(self, requests: list[Request]) -> list[int]:
        """Catch the target up and map slots; the rows that have a pair to feed (context >= 2)."""
        self.target.catch_up_all(requests)
        for request in requests:
            self.target_slots[self.slot_of(request)] = self.target.slot_of(request)
        return [i for i, r in enumerate(requests) if len(r.all_token_ids) >= 2]

    def _run(self, slots: list[int], feeds: list[list[int]], num_logits: list[int]) -> torch.Tensor:
        """Feed the pairs at each slot's next positions: the target's features where it has them,
        the head's own prediction for the one position past them (drafting)."""
        features, target_cache = [], self.target.cache
        for slot, feed in zip(slots, feeds):
            start, end = self.cache.lengths[slot], self.cache.lengths[slot] + len(feed)
            target_slot = self.target_slots[slot]
            real_end = min(end, target_cache.lengths[target_slot])
            parts = [target_cache.features[target_slot, start:real_end]]               # [real, hidden]
            if end > max(start, real_end):
                if end - max(start, real_end) > 1 or slot not in self.predicted:
                    raise RuntimeError(f"level {self.name!r}: pairs past the target's features must be fed one at a time")
                parts.append(self.predicted[slot][None])
            if self.num_real.get(slot, 0) == start:
                self.num_real[slot] = max(start, real_end)
            features.append(torch.cat(parts))
        padded = torch.nn.utils.rnn.pad_sequence(features, batch_first=True)              # [b, width, hidden]
        logits, hidden = self.runner.forward(slots, feeds, num_logits, features=padded, return_hidden=True)
        for row, (slot, feed) in enumerate(zip(slots, feeds)):
            self.predicted[slot] = hidden[row, len(feed) - 1]
        return logits

    def draft(self, requests: list[Request], ks: list[int], p_mins: list[float] | None = None) -> Draft:
        ready = self._prepare(requests)
        out = Draft([[] for _ in requests], [None] * len(requests), [[] for _ in requests])
        if ready:
            p_mins = p_mins or [0.0] * len(requests)
            drafted = super().draft([requests[i] for i in ready], [ks[i] for i in ready], [p_mins[i] for i in ready])
            for j, i in enumerate(ready):
                out.proposals[i], out.q[i], out.confidences[i] = drafted.proposals[j], drafted.q[j], drafted.confidences[j]
        return out

    def verify_logits(self, requests: list[Request], proposals: list[list[int]]) -> torch.Tensor:
        """Logits at the last committed token and at each proposed token, one forward per
        proposed position: [batch, m_max + 1, vocab] (uniform for a row with no pair yet)."""
        ready = self._prepare(requests)
        m_max = max(len(p) for p in proposals)
        out = torch.zeros(len(requests), m_max + 1, self.runner.vocab_size, device=self.runner.device)
        if not ready:
            return out
        out[ready, :1] = self.forward([requests[i] for i in ready], [[] for _ in ready], [1] * len(ready))
        slots = [self.slot_of(r) for r in requests]
        for j in range(m_max):
            rows = [i for i in ready if len(proposals[i]) > j]
            if rows:
                out[rows, j + 1] = self._feed([slots[i] for i in rows], [[proposals[i][j]] for i in rows],
                                              [1] * len(rows))[:, 0]
        return out

    def sync(self, request: Request) -> None:
        super().sync(request)
        slot = request.level_slots.get(self.name)
        if slot is not None:
            self.num_real[slot] = min(self.num_real.get(slot, 0), self.cache.lengths[slot])

    def release(self, request: Request) -> None:
        slot = request.level_slots.get(self.name)
        super().release(request)
        for table in (self.num_real, self.predicted, self.target_slots):
            table.pop(slot, None)
