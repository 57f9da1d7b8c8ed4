"""A model level of a chain: one ModelRunner with per-request slots, lazy catch-up and rollback.

Invariant: after `sync`, a request's slot holds a prefix of its committed tokens that stops
short of the last one (which the next forward feeds). Levels that sat out earlier steps simply
have a shorter prefix; their next forward feeds the missing tokens first (lazy catch-up).
"""

from __future__ import annotations

import torch

from engine.runner import ModelRunner
from engine.sampling import probs_for_rows, sample_from
from engine.sequence import Request


class ModelLevel:
    def __init__(self, name: str, runner: ModelRunner):
        self.name = name
        self.runner = runner
        self.cached_tokens: dict[int, list[int]] = {}      # slot -> tokens its cache holds
        self.verified: dict[int, int] = {}                 # slot -> prefix known to be committed

    @property
    def cache(self):
        return self.runner.cache

    def slot_of(self, request: Request) -> int:
        slot = request.level_slots.get(self.name)
        if slot is None:
            slot = self.cache.allocate_slot()
            request.level_slots[self.name] = slot
            self.cached_tokens[slot] = []
            self.verified[slot] = 0
        return slot

    def release(self, request: Request) -> None:
        """Free the request's KV at this level at once (finish or abort)."""
        slot = request.level_slots.pop(self.name, None)
        if slot is not None:
            self.cache.free_slot(slot)
            del self.cached_tokens[slot]
            del self.verified[slot]

    def committed_length(self, request: Request) -> int:
        slot = request.level_slots.get(self.name)
        return 0 if slot is None else self.cache.lengths[slot]

    def _pending(self, request: Request) -> list[int]:
        """Committed tokens this level has not seen yet (always ends with the last token)."""
        return request.all_token_ids[self.committed_length(request):]

    def forward(self, requests: list[Request], extras: list[list[int]], num_logits: list[int]) -> torch.Tensor:
        """Feed each row's pending tokens plus `extras[i]`; [batch, max(num_logits), vocab] logits."""
        slots = [self.slot_of(r) for r in requests]
        feeds = [self._pending(r) + list(extra) for r, extra in zip(requests, extras)]
        for slot, feed in zip(slots, feeds):
            self.cached_tokens[slot].extend(feed)
        return self.runner.forward(slots, feeds, num_logits)

    def verify_logits(self, requests: list[Request], proposals: list[list[int]]) -> torch.Tensor:
        """Logits at the last committed token and at each proposed token: [batch, m_max + 1, vocab]."""
        return self.forward(requests, proposals, [len(p) + 1 for p in proposals])

    def draft(self, requests: list[Request], ks: list[int]) -> tuple[list[list[int]], list[torch.Tensor | None]]:
        """Autoregressively propose ks[i] tokens per row; also the [k, vocab] distributions
        they were sampled from (None for greedy rows, whose q is one-hot)."""
        proposals: list[list[int]] = [[] for _ in requests]
        dists: list[list[torch.Tensor]] = [[] for _ in requests]
        active = list(range(len(requests)))
        first = True
        while active:
            rows = [requests[i] for i in active]
            if first:
                logits = self.forward(rows, [[] for _ in rows], [1] * len(rows))[:, 0]
                first = False
            else:
                slots = [self.slot_of(r) for r in rows]
                feeds = [[proposals[i][-1]] for i in active]
                for slot, feed in zip(slots, feeds):
                    self.cached_tokens[slot].extend(feed)
                logits = self.runner.forward(slots, feeds, [1] * len(rows))[:, 0]
            tokens = logits.argmax(dim=-1)                                        # [rows]
            sampled = [row for row, i in enumerate(active) if not requests[i].params.is_greedy]
            if sampled:
                probs = probs_for_rows(logits[sampled], [requests[active[row]].params for row in sampled])
                uniforms = torch.cat([torch.rand(1, generator=requests[active[row]].generator) for row in sampled])
                tokens[sampled] = sample_from(probs, uniforms)
                for j, row in enumerate(sampled):
                    dists[active[row]].append(probs[j])
            for i, token in zip(active, tokens.tolist()):
                proposals[i].append(token)
            active = [i for i in active if len(proposals[i]) < ks[i]]
        q = [torch.stack(d) if d else None for d in dists]
        return proposals, q

    def sync(self, request: Request) -> None:
        """Roll the request's slot back to the longest prefix that matches its committed tokens."""
        slot = request.level_slots.get(self.name)
        if slot is None:
            return
        cached = self.cached_tokens[slot]
        committed = request.all_token_ids
        limit = min(len(cached), len(committed) - 1)
        keep = min(self.verified[slot], limit)
        # positions before the last sync are known to match; compare the speculative tail only
        while keep < limit and cached[keep] == committed[keep]:
            keep += 1
        self.verified[slot] = keep
        if keep < len(cached):
            del cached[keep:]
            self.cache.rollback(slot, keep)
