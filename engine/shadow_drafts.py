"""Shadow drafting: the acceptance of model-free drafters a row did not run, measured for free.

A router learns a pair's acceptance only from the steps that run it, so one that starts out
choosing plain decoding never finds out that suffix drafting would pay on *this* request (a
summary, a translation, a code edit: ~2x in bench/results/chains.md) while the pooled prior
says it does not. A model-free drafter proposes in microseconds with no forward pass, and the
target's committed tokens are exactly what verification would have compared it against: a
greedy verifier accepts the longest prefix of the proposal that the committed tokens repeat,
and a sampling verifier accepts a deterministic proposal x with probability p(x), which is the
probability that the committed token is x. So every row keeps one pending proposal per
drafter, made from its committed tokens whenever its chain did not use that drafter, and
scores it, as `PairOutcome(drafter, "target", K, accepted)`, once the committed tokens cover
it or contradict it. A drafter that finds nothing to propose is scored at once, as an empty
proposal (`PairOutcome(drafter, "target", 0, 0)`: the trackers count it as a rejection, which is
what it is worth to a verifier). The trackers then hold per-request acceptance for every
model-free pair whatever the router chose.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from engine.decision import TARGET
from engine.drafters.base import ModelFreeDrafter
from engine.sequence import Request
from engine.spec_step import PairOutcome


@dataclass
class PendingProposal:
    start: int              # position in the request's tokens where the proposal begins
    tokens: list[int]


def score_proposal(pending: PendingProposal, tokens: list[int], is_final: bool) -> int | None:
    """Tokens of the proposal a verifier would have accepted, or None while the committed tokens
    neither cover nor contradict it yet (a finished request scores what it has)."""
    seen = tokens[pending.start: pending.start + len(pending.tokens)]
    matched = 0
    while matched < len(seen) and seen[matched] == pending.tokens[matched]:
        matched += 1
    if matched < len(seen) or len(seen) == len(pending.tokens) or is_final:
        return matched
    return None


class ShadowDrafts:
    """Args:
        length: tokens per shadow proposal (the router's longest K is the useful choice);
            0 turns shadow drafting off.

    The drafters come with every call (the engine's current ones: benchmarks swap them per
    configuration, and the suffix drafter's history must be the one the real steps use).
    """

    def __init__(self, length: int):
        if length < 0:
            raise ValueError(f"shadow draft length must be >= 0, got {length}")
        self.length = length
        self.pending: dict[str, dict[str, PendingProposal]] = {}     # request id -> drafter -> proposal

    def observe(self, request: Request, chain: Iterable[str],
                drafters: Mapping[str, ModelFreeDrafter]) -> list[PairOutcome]:
        """After the row's commit: score the drafters' pending proposals that are settled and
        start new ones for the drafters the row's chain (`()` for plain) did not run."""
        if not self.length:
            return []
        used = set(chain)
        tokens = request.all_token_ids
        mine = self.pending.setdefault(request.request_id, {})
        outcomes: list[PairOutcome] = []
        for name, drafter in drafters.items():
            if name in used:                    # the real step measured it
                mine.pop(name, None)
                continue
            pending = mine.get(name)
            if pending is not None:
                accepted = score_proposal(pending, tokens, request.is_finished)
                if accepted is None:
                    continue
                del mine[name]
                seen = len(tokens) - pending.start
                # a verifier sees the whole proposal; only a request that ended first truncates it
                proposed = len(pending.tokens) if accepted < seen else min(len(pending.tokens), seen)
                if proposed > 0:
                    outcomes.append(PairOutcome(name, TARGET, proposed, accepted))
            if not request.is_finished:
                proposal = drafter.propose(request.request_id, tokens, self.length)
                if proposal:
                    mine[name] = PendingProposal(len(tokens), proposal)
                else:
                    outcomes.append(PairOutcome(name, TARGET, 0, 0))
        if not mine:
            del self.pending[request.request_id]
        return outcomes

    def forget(self, request_id: str) -> None:
        self.pending.pop(request_id, None)
