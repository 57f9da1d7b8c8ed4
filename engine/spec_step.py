"""One multi-level speculative step over a batch whose rows may run different chains and K.

For a chain [L0, ..., Ln = target], L0 proposes up to K tokens; every higher level runs one
forward over the proposal of the level below, keeps the longest acceptable prefix and adds one
token of its own; its output (distributed as its own model) is the next level's proposal, and
its probabilities are the next level's q. Forwards are grouped by level, so the target runs
exactly once per step for the whole batch.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from engine.decision import Decision
from engine.drafters.base import ModelFreeDrafter
from engine.levels import ModelLevel
from engine.logprobs import TokenLogprob, token_logprobs
from engine.sampling import probs_for_rows
from engine.sequence import Request
from engine.verify import PLACEHOLDER_TOKEN_ID, verify_greedy, verify_sampling


@dataclass
class PairOutcome:
    """How one level fared against the level above it in one step for one row."""

    drafter: str
    verifier: str
    num_proposed: int
    num_accepted: int
    similarity: float | None = None       # 1 - TV(p, q) where both distributions were at hand
    # a model first level's top-1 probability of each proposed token, then of the one that
    # stopped its draft early (Decision.p_min), if one did; None for other pairs
    confidences: list[float] | None = None


@dataclass
class RowResult:
    tokens: list[int]                       # the target's output: accepted + 1
    pairs: list[PairOutcome] = field(default_factory=list)
    # model-free drafters the row did not run, scored against its committed tokens
    # (engine/shadow_drafts.py); the trackers read them, the step's own counts do not
    shadow_pairs: list[PairOutcome] = field(default_factory=list)
    # per token, the target's logprobs (engine/logprobs.py); only for a request that asks
    logprobs: list[TokenLogprob] | None = None

    @property
    def num_proposed(self) -> int:
        """Tokens the first level of the chain proposed (K after capping)."""
        return self.pairs[0].num_proposed if self.pairs else 0

    @property
    def num_accepted(self) -> int:
        """Of those, how many were committed: a first-level token survives only if every level
        above accepted it, so this is the minimum over the pairs and never exceeds
        num_proposed (each verifying level's own extra token is not counted)."""
        return min(pair.num_accepted for pair in self.pairs) if self.pairs else 0


def _verify_group(logits: torch.Tensor, rows: list[Request], proposals: list[list[int]],
                  q: list[torch.Tensor | None]) -> tuple[list[list[int]], list[torch.Tensor | None], list[float | None]]:
    """Verify each row's proposal with a level's `logits` [b, m_max + 1, vocab] over it; return
    the level's outputs, their distributions and p/q similarity."""
    m_max = max(len(p) for p in proposals)
    outputs: list[list[int]] = [[] for _ in rows]
    dists: list[torch.Tensor | None] = [None] * len(rows)
    similarity: list[float | None] = [None] * len(rows)
    device = logits.device
    # built on the host, moved in one copy each
    counts = torch.tensor([len(p) for p in proposals]).to(device)                            # [b]
    padded = torch.tensor([p + [PLACEHOLDER_TOKEN_ID] * (m_max - len(p)) for p in proposals],
                          dtype=torch.long).to(device)                                        # [b, m_max]
    greedy = [i for i, r in enumerate(rows) if r.params.is_greedy]
    if greedy:
        out, accepted = verify_greedy(logits[greedy], padded[greedy], counts[greedy])
        for i, tokens, num_accepted in zip(greedy, out.tolist(), accepted.tolist()):
            outputs[i] = tokens[: num_accepted + 1]
    sampled = [i for i, r in enumerate(rows) if not r.params.is_greedy]
    if not sampled:
        return outputs, dists, similarity
    p = probs_for_rows(logits[sampled, : m_max + 1], [rows[i].params for i in sampled])   # [s, m_max + 1, vocab]
    in_range = torch.arange(m_max, device=device)[None, :] < counts[sampled][:, None]   # [s, m_max]
    # q: the level below's distributions, one-hot for a deterministic drafter; zero past each proposal
    draft_probs = F.one_hot(padded[sampled].clamp(min=0), p.shape[-1]).float() * in_range[..., None]
    has_q = [j for j, i in enumerate(sampled) if q[i] is not None and len(proposals[i])]
    if has_q:
        below = pad_sequence([q[sampled[j]][: len(proposals[sampled[j]])] for j in has_q], batch_first=True)
        draft_probs[has_q, : below.shape[1]] = below                                # [s, m_max, vocab]
    # each row's randomness from its own (host) generator, padded with zeros and moved once
    draws = [torch.rand(len(proposals[i]) + 1, generator=rows[i].generator) for i in sampled]
    uniforms = F.pad(pad_sequence(draws, batch_first=True), (0, m_max + 1 - max(len(d) for d in draws))).to(device)
    out, accepted = verify_sampling(p, padded[sampled], counts[sampled], draft_probs, uniforms)
    distance = 0.5 * (p[:, :m_max] - draft_probs).abs().sum(dim=-1) * in_range    # [s, m_max] total variation
    mean_similarity = (1 - distance.sum(dim=1) / counts[sampled].clamp(min=1)).tolist()
    for j, (i, tokens, num_accepted) in enumerate(zip(sampled, out.tolist(), accepted.tolist())):
        outputs[i] = tokens[: num_accepted + 1]
        dists[i] = p[j, : num_accepted + 1]
    for j in has_q:
        similarity[sampled[j]] = mean_similarity[j]
    return outputs, dists, similarity


def run_step(requests: list[Request], decisions: list[Decision], levels: dict[str, ModelLevel],
             drafters: dict[str, ModelFreeDrafter], ks: list[int]) -> list[RowResult]:
    """Propose, verify level by level, and return each row's committed candidates.

    `ks[i]` is the draft length after capping by the row's remaining budget; the caller commits
    the tokens (stop conditions) and then syncs every level's cache.
    """
    n = len(requests)
    proposals: list[list[int]] = [[] for _ in range(n)]
    q: list[torch.Tensor | None] = [None] * n
    confidences: list[list[float] | None] = [None] * n
    results = [RowResult(tokens=[]) for _ in range(n)]
    chains = [d.chain if ks[i] > 0 else d.chain[-1:] for i, d in enumerate(decisions)]

    # 1. the first level of each chain proposes
    by_proposer: dict[str, list[int]] = defaultdict(list)
    for i, chain in enumerate(chains):
        if len(chain) > 1:
            by_proposer[chain[0]].append(i)
    for name, rows in by_proposer.items():
        if name in drafters:
            for i in rows:
                proposals[i] = drafters[name].propose(requests[i].request_id, requests[i].all_token_ids, ks[i])
        else:
            drafted = levels[name].draft([requests[i] for i in rows], [ks[i] for i in rows],
                                         [decisions[i].p_min for i in rows])
            for i, tokens, dist, confidence in zip(rows, *drafted):
                proposals[i], q[i], confidences[i] = tokens, dist, confidence

    # 2. verifying levels, farthest from the target first, so the target runs once for all rows
    depth = max(len(c) for c in chains)
    for distance in range(max(depth - 2, 0), -1, -1):
        by_level: dict[str, list[int]] = defaultdict(list)
        for i, chain in enumerate(chains):
            position = len(chain) - 1 - distance
            if position >= 1 or distance == 0:     # a plain row is the target alone
                by_level[chain[position]].append(i)
        for name, rows in by_level.items():
            group = [requests[i] for i in rows]
            logits = levels[name].verify_logits(group, [proposals[i] for i in rows])    # [b, m_max + 1, vocab]
            outputs, dists, similarity = _verify_group(logits, group, [proposals[i] for i in rows], [q[i] for i in rows])
            if distance == 0:       # the target: its outputs are what the step commits
                for j, i in enumerate(rows):
                    if group[j].params.logprobs is not None:
                        results[i].logprobs = token_logprobs(logits[j, : len(outputs[j])], outputs[j],
                                                             group[j].params.logprobs)
            for j, i in enumerate(rows):
                chain = chains[i]
                if len(chain) > 1:
                    below = chain[len(chain) - 2 - distance]
                    results[i].pairs.append(PairOutcome(below, name, len(proposals[i]), len(outputs[j]) - 1,
                                                        similarity[j], None if results[i].pairs else confidences[i]))
                proposals[i], q[i] = outputs[j], dists[j]

    for i in range(n):
        results[i].tokens = proposals[i]
    return results
