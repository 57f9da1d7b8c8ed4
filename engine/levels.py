"""A model level of a chain: one ModelRunner with per-request slots, lazy catch-up and rollback.

Invariant: after `sync`, a request's slot holds a prefix of its committed tokens that stops
short of the last one (which the next forward feeds). Levels that sat out earlier steps simply
have a shorter prefix; their next forward feeds the missing tokens first (lazy catch-up).

A forward pads every row to the longest feed, so a new prompt joining decoding rows would make
all of them compute (and hold activations for) the prompt's length. Long pending feeds are
therefore caught up first, in forwards of their own that hold at most `token_budget` padded
positions (a row longer than that is prefilled in slices), and the step's forward then feeds
each row its last committed token plus its extras.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from engine.config import EngineConfig
from engine.runner import ModelRunner
from engine.sampling import probs_for_rows, sample_from
from engine.sequence import Request


class Draft(NamedTuple):
    """What a model level drafted: per row its proposal, the [len, vocab] distributions its
    tokens were sampled from (None for greedy rows, whose q is one-hot), and the top-1
    probability of each proposed token, then of the token that stopped it early, if one did."""

    proposals: list[list[int]]
    q: list[torch.Tensor | None]
    confidences: list[list[float]]


@dataclass(frozen=True)
class CatchUpPlan:
    """Rows whose pending tokens (all but the last) are fed before the step's forward, and those
    forwards: each a list of (row, start in its pending tokens, number of tokens)."""

    rows: list[int]
    forwards: list[list[tuple[int, int, int]]]


def plan_catch_up(pending: list[int], extras: list[int], threshold: int, budget: int) -> CatchUpPlan:
    """Which rows to catch up first and in which forwards, from each row's pending and extra
    token counts (see the module doc), for `EngineConfig.catch_up_threshold` and `token_budget`;
    the engine runs it and the simulator charges it."""
    batch = len(pending)
    sizes = [p + e for p, e in zip(pending, extras)]
    chosen: set[int] = set()
    if any(p <= threshold for p in pending):
        chosen = {i for i, p in enumerate(pending) if p > threshold}

    def width() -> int:
        return max(1 + extras[i] if i in chosen else sizes[i] for i in range(batch))

    for i in sorted(range(batch), key=lambda i: -sizes[i]):
        if batch * width() <= budget:
            break
        if pending[i] <= 1:                        # nothing to move out of the widest row
            break
        chosen.add(i)
    rows = sorted(chosen)
    return CatchUpPlan(rows, catch_up_forwards(rows, pending, budget))


def catch_up_forwards(rows: list[int], pending: list[int], budget: int) -> list[list[tuple[int, int, int]]]:
    """The forwards that feed `rows`' pending tokens but their last: grouped, longest first, and
    a row longer than `budget` sliced, so that no forward holds more than `budget` padded positions."""
    forwards: list[list[tuple[int, int, int]]] = []
    left = {i: (0, pending[i] - 1) for i in rows}  # (start, tokens) still to feed
    for i in rows:
        start, n = left[i]
        while n > budget:                          # a row longer than the budget: chunked prefill
            forwards.append([(i, start, budget)])
            start, n = start + budget, n - budget
        left[i] = (start, n)
    group: list[tuple[int, int, int]] = []
    for i in sorted(rows, key=lambda i: -left[i][1]):      # a group's first row sets its width
        if group and (len(group) + 1) * group[0][2] > budget:
            forwards.append(group)
            group = []
        group.append((i, *left[i]))
    if group:
        forwards.append(group)
    return [f for f in forwards if any(n for _, _, n in f)]


class ModelLevel:
    """Args:
        catch_up_threshold: a row with more pending tokens than this is caught up on its own
            when the batch also has rows with at most this many (decoding rows).
        token_budget: most padded positions (rows x longest feed) of one forward; rows are
            caught up, longest first, until the step's forward fits, and catch-up forwards are
            grouped (and a longer row sliced) to fit too. A lone row within it runs as one forward.
    """

    def __init__(self, name: str, runner: ModelRunner, catch_up_threshold: int = EngineConfig.catch_up_threshold,
                 token_budget: int = EngineConfig.token_budget):
        if catch_up_threshold < 1 or token_budget < 1:
            raise ValueError(f"catch_up_threshold and token_budget must be >= 1, "
                             f"got {catch_up_threshold} and {token_budget}")
        self.name = name
        self.runner = runner
        self.catch_up_threshold = catch_up_threshold
        self.token_budget = token_budget
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
        pending = [self._pending(r) for r in requests]
        for i in self._catch_up(slots, pending, extras):
            pending[i] = pending[i][-1:]           # the rest is in the cache now
        feeds = [p + list(extra) for p, extra in zip(pending, extras)]
        return self._feed(slots, feeds, num_logits)

    def _feed(self, slots: list[int], feeds: list[list[int]], num_logits: list[int]) -> torch.Tensor:
        for slot, feed in zip(slots, feeds):
            self.cached_tokens[slot].extend(feed)
        return self._run(slots, feeds, num_logits)

    def _run(self, slots: list[int], feeds: list[list[int]], num_logits: list[int]) -> torch.Tensor:
        """The runner's forward over the feeds (an EAGLE level adds their features)."""
        return self.runner.forward(slots, feeds, num_logits)

    def _run_forwards(self, slots: list[int], pending: list[list[int]], forwards) -> None:
        for forward in forwards:
            self._feed([slots[i] for i, _, _ in forward], [pending[i][start:start + n] for i, start, n in forward],
                       [1] * len(forward))

    def _catch_up(self, slots: list[int], pending: list[list[int]], extras: list[list[int]]) -> list[int]:
        """Run `plan_catch_up`'s forwards (one logit each, discarded); return the rows caught up."""
        plan = plan_catch_up([len(p) for p in pending], [len(e) for e in extras],
                             self.catch_up_threshold, self.token_budget)
        self._run_forwards(slots, pending, plan.forwards)
        return plan.rows

    def catch_up_all(self, requests: list[Request]) -> None:
        """Feed every row's pending tokens but the last now, within `token_budget` per forward.
        The target does this before an EAGLE level reads its features of every committed
        position but the last; its step's forward then feeds the last token plus the proposal."""
        slots = [self.slot_of(r) for r in requests]
        pending = [self._pending(r) for r in requests]
        rows = [i for i, p in enumerate(pending) if len(p) > 1]
        self._run_forwards(slots, pending, catch_up_forwards(rows, [len(p) for p in pending], self.token_budget))

    def verify_logits(self, requests: list[Request], proposals: list[list[int]]) -> torch.Tensor:
        """Logits at the last committed token and at each proposed token: [batch, m_max + 1, vocab]."""
        return self.forward(requests, proposals, [len(p) + 1 for p in proposals])

    def draft(self, requests: list[Request], ks: list[int], p_mins: list[float] | None = None) -> Draft:
        """Autoregressively propose up to ks[i] tokens per row (see `Draft`).

        A row stops early at the first token whose top-1 probability under this level (its
        sampling distribution; softmax of the logits for a greedy row) is below p_mins[i], and
        that token is not proposed (llama.cpp's --draft-p-min). The stop reads only this level's
        own distribution, so verification stays lossless (engine/verify.py)."""
        p_mins = p_mins or [0.0] * len(requests)
        proposals: list[list[int]] = [[] for _ in requests]
        dists: list[list[torch.Tensor]] = [[] for _ in requests]
        confidences: list[list[float]] = [[] for _ in requests]
        active = [i for i in range(len(requests)) if ks[i] > 0]
        first = True
        while active:
            rows = [requests[i] for i in active]
            if first:
                logits = self.forward(rows, [[] for _ in rows], [1] * len(rows))[:, 0]
                first = False
            else:
                slots = [self.slot_of(r) for r in rows]
                logits = self._feed(slots, [[proposals[i][-1]] for i in active], [1] * len(rows))[:, 0]
            tokens = logits.argmax(dim=-1)                                        # [rows]
            top = torch.softmax(logits.float(), dim=-1).amax(dim=-1)              # [rows] top-1 probability
            sampled = [row for row, i in enumerate(active) if not requests[i].params.is_greedy]
            if sampled:
                probs = probs_for_rows(logits[sampled], [requests[active[row]].params for row in sampled])
                uniforms = torch.cat([torch.rand(1, generator=requests[active[row]].generator)
                                      for row in sampled]).to(logits.device)
                tokens[sampled] = sample_from(probs, uniforms)
                top[sampled] = probs.amax(dim=-1)
                for j, row in enumerate(sampled):
                    dists[active[row]].append(probs[j])
            stopped = set()
            host_tokens, host_top = torch.stack([tokens.to(top.dtype), top]).tolist()   # one copy (ids < 2^24)
            for i, token, confidence in zip(active, host_tokens, host_top):
                confidences[i].append(confidence)
                if confidence < p_mins[i]:
                    stopped.add(i)
                    if dists[i] and len(dists[i]) > len(proposals[i]):
                        dists[i].pop()                    # the dropped token's distribution
                else:
                    proposals[i].append(int(token))
            active = [i for i in active if i not in stopped and len(proposals[i]) < ks[i]]
        q = [torch.stack(d) if d else None for d in dists]
        return Draft(proposals, q, confidences)

    def sync(self, request: Request) -> None:
        """Roll the request's slot back to the longest prefix that matches its committed tokens."""
        slot = request.level_slots.get(self.name)
        if slot is None:
            return
        cached = self.cached_tokens[slot]
        committed = self._aligned_committed(request)
        limit = max(0, min(self._reusable_length(slot), len(committed) - 1))
        keep = min(self.verified[slot], limit)
        # positions before the last sync are known to match; compare the speculative tail only
        while keep < limit and cached[keep] == committed[keep]:
            keep += 1
        self.verified[slot] = keep
        if keep < len(cached):
            del cached[keep:]
            self.cache.rollback(slot, keep)

    def _aligned_committed(self, request: Request) -> list[int]:
        """The committed tokens that positions of the cache hold, position by position."""
        return request.all_token_ids

    def _reusable_length(self, slot: int) -> int:
        """How much of the slot may be kept where its tokens match the committed ones."""
        return len(self.cached_tokens[slot])
