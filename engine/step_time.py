"""Which forwards one step runs, and what they cost by the latency profile.

A step groups its rows as `engine.spec_step.run_step` runs them: each model-free drafter
proposes for its rows at once (the longest K), a model drafter runs a forward per token for the
rows still drafting, each verifier one forward per (level, depth in the row's chain) over its
rows (padded to the widest), and the target one forward over every row (plain rows join it).
`group_forwards` is that grouping; the cost model prices it before a step (`step_time`) and the
simulator's clock (`env.sim_clock.rows_forwards`) charges it after one, with what each row's
caches really lacked.

Time of a step at batch B and mean context C where every row runs the same decision:
    L0 model-free:   forward_time(L0, B, K, C)  (B proposals of K tokens)
    L0 draft model:  K * forward_time(L0, B, 1, C)  (K autoregressive forwards of one token);
                     with a p_min threshold, forward j weighted by the odds that some row still
                     drafts (`engine.draft_stop.draft_forward_odds`). The verifiers are charged
                     the full K: their forward barely grows with a few tokens, and a row that
                     does draft all K sets the width.
    Li, i >= 1:      forward_time(Li, B, K + i, C)  (one forward over the last committed token
                     plus the longest proposal it can receive, K + i - 1: the batch is padded)
    plain:           forward_time(target, B, 1, C)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

from engine.decision import TARGET, Decision
from engine.draft_stop import draft_forward_odds
from engine.profile import LatencyProfile


class ForwardGroup(NamedTuple):
    """The rows one level runs in one forward: drafting (a model first level) or verifying."""

    level: str
    is_drafting: bool = False
    distance: int = 0               # a verifier's levels below the target in its chain (0: the target)


class StepGroups(NamedTuple):
    """Args:
        forwards: group -> (row, position of the level in the row's chain) for every model forward
            group, in the order the rows first need them; a drafting group's position is 0, and so
            is a plain row's in the target's group.
        model_free: model-free first level -> the rows it proposes for.
    """

    forwards: dict[ForwardGroup, list[tuple[int, int]]]
    model_free: dict[str, list[int]]


def group_forwards(profile: LatencyProfile, chains: Sequence[tuple[str, ...]], ks: Sequence[int]) -> StepGroups:
    """The forward groups of one step whose row i runs `chains[i]` with draft length `ks[i]`
    (0, or a chain of the target alone, is plain decoding)."""
    forwards: dict[ForwardGroup, list[tuple[int, int]]] = {}
    model_free: dict[str, list[int]] = {}
    for row, (chain, k) in enumerate(zip(chains, ks)):
        if k > 0 and len(chain) > 1:
            if profile.levels[chain[0]].kind == "model":
                forwards.setdefault(ForwardGroup(chain[0], is_drafting=True), []).append((row, 0))
            else:
                model_free.setdefault(chain[0], []).append(row)
            # run_step verifies level by level, farthest from the target first: one forward per
            # (level, distance), so a level verifying at two depths of two chains runs twice
            for position, level in enumerate(chain[1:], start=1):
                forwards.setdefault(ForwardGroup(level, distance=len(chain) - 1 - position), []).append((row, position))
        else:
            forwards.setdefault(ForwardGroup(TARGET), []).append((row, 0))
    return StepGroups(forwards, model_free)


def step_time(profile: LatencyProfile, decisions: Sequence[Decision], context: int,
              continue_odds: Sequence[float] | None = None) -> float:
    """Seconds of one step whose row i runs `decisions[i]`, every row at context `context`:
    each verifier fed the longest proposal it can receive (K + i - 1 tokens after the last
    committed one), no catch-up (the cost model amortises that apart). `continue_odds[i]`: c of
    row i's p_min threshold (`engine.draft_stop`), 1 (the default) drafting all K. Rows alike
    are grouped once (a batch of 16 on one decision costs what one row does)."""
    kinds = Counter(zip(decisions, continue_odds or [1.0] * len(decisions)))      # (decision, c) -> rows
    distinct, counts = list(kinds), list(kinds.values())
    forward_time = profile.forward_time
    ks = [0 if d.is_plain else d.k for d, _ in distinct]
    groups = group_forwards(profile, [d.chain for d, _ in distinct], ks)
    target = groups.forwards.get(ForwardGroup(TARGET), [])
    seconds = forward_time(TARGET, len(decisions), max([1] + [ks[row] + position for row, position in target]), context)
    drafting = []
    for group, rows in groups.forwards.items():
        if group.is_drafting:
            drafting.append((group.level, [(ks[row], distinct[row][1], counts[row]) for row, _ in rows]))
        elif group != ForwardGroup(TARGET):
            seconds += forward_time(group.level, sum(counts[row] for row, _ in rows),
                                    max(ks[row] + position for row, position in rows), context)
    for name, rows in groups.model_free.items():
        seconds += forward_time(name, sum(counts[row] for row in rows), max(ks[row] for row in rows), context)
    for name, rows in drafting:
        row_ks, row_cs, row_counts = zip(*rows)
        odds = draft_forward_odds(row_ks, row_cs, row_counts)
        seconds += sum(p * forward_time(name, sum(n for k, n in zip(row_ks, row_counts) if k > j), 1, context)
                       for j, p in enumerate(odds))
    return seconds
