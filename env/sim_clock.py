"""The simulator's clock: the forwards one realized step runs, as calls of the latency profile.

`engine.cost_model.CostModel.step_time` is the expectation before a step; this is the charge
after it, per row and as `engine.spec_step.run_step` and the levels really run the forwards:
grouped by level and, for a verifier, its depth in the row's chain (plain rows join the
target's group; rows on different chains share a group), each group padded to its widest feed
and longest context, and a level feeds what its cache lacks first (prefill of a new request, lazy
catch-up of a level that sat out), long pending feeds in forwards of their own as
`engine.levels.plan_catch_up` plans them. A model drafter's catch-up and first forward, which
feed no proposal, form a group of their own (`ForwardGroup(level, is_drafting=True)`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from engine.config import EngineConfig
from engine.decision import TARGET
from engine.levels import plan_catch_up
from engine.profile import LatencyProfile


class ForwardGroup(NamedTuple):
    """The rows one level runs in one forward: drafting (a model first level) or verifying."""

    level: str
    is_drafting: bool = False
    distance: int = 0               # a verifier's levels below the target in its chain (0: the target)


def per_row_chains(chains: tuple[str, ...] | Sequence[tuple[str, ...]], num_rows: int) -> list[tuple[str, ...]]:
    """`chains` as one chain per row: a single chain (a tuple of level names) is every row's."""
    if not chains or isinstance(chains[0], str):
        return [tuple(chains)] * num_rows
    return list(chains)


def rows_forwards(profile: LatencyProfile, num_tokens: list[int], cached: list[dict[str, int]],
                  chains: tuple[str, ...] | Sequence[tuple[str, ...]], ks: list[int], results: list,
                  config: EngineConfig) -> list[tuple[str, int, int, int]]:
    """The (level, batch, tokens per row, context) calls of `profile.forward_time` of one step.

    `num_tokens[i]`: row i's committed tokens before the step; `cached[i]`: level -> tokens its
    cache holds for the row; `chains`: one chain for every row, or row i's chain at `chains[i]`
    (per-row routing: rows on different chains share each level's forward, as
    `engine.spec_step.run_step` groups them); `ks[i]`: the row's K after capping (0 = plain);
    `results[i]`: its RowResult (`pairs[j].num_proposed` is what level j + 1 was fed);
    `config`: the engine's catch-up threshold and token budget.
    """
    chains = per_row_chains(chains, len(num_tokens))
    groups: dict[ForwardGroup, list[tuple[int, int, int]]] = {}   # -> [(pending, extra, cached)] per row
    drafting: dict[str, list[tuple[int, int]]] = {}     # model first level -> (committed tokens, k) per row
    model_free: dict[str, list[tuple[int, int]]] = {}   # model-free first level -> (committed tokens, k) per row
    for total, have_by_level, chain, k, result in zip(num_tokens, cached, chains, ks, results):
        if k > 0 and len(chain) > 1:
            if profile.levels[chain[0]].kind == "model":
                drafting.setdefault(chain[0], []).append((total, k))
                have = have_by_level.get(chain[0], 0)
                groups.setdefault(ForwardGroup(chain[0], is_drafting=True), []).append((total - have, 0, have))
            else:
                model_free.setdefault(chain[0], []).append((total, k))
            # run_step verifies level by level, farthest from the target first: one forward per
            # (level, distance), so a level verifying at two depths of two chains runs twice
            for position, (pair, level) in enumerate(zip(result.pairs, chain[1:]), start=1):
                have = have_by_level.get(level, 0)
                group = ForwardGroup(level, distance=len(chain) - 1 - position)
                groups.setdefault(group, []).append((total - have, pair.num_proposed, have))
        else:
            have = have_by_level.get(TARGET, 0)
            groups.setdefault(ForwardGroup(TARGET), []).append((total - have, 0, have))
    forwards = []
    for group, rows in groups.items():
        plan = plan_catch_up([p for p, _, _ in rows], [e for _, e, _ in rows], config.catch_up_threshold,
                             config.token_budget)
        for forward in plan.forwards:
            forwards.append((group.level, len(forward), max(n for _, _, n in forward),
                             max(rows[i][2] + start for i, start, _ in forward)))
        caught = set(plan.rows)
        fed = [(1 if i in caught else p) + e for i, (p, e, _) in enumerate(rows)]
        starts = [have + (p - 1 if i in caught else 0) for i, (p, _, have) in enumerate(rows)]
        forwards.append((group.level, len(rows), max(fed), max(starts)))
    for name, rows in model_free.items():
        forwards.append((name, len(rows), max(k for _, k in rows), max(total for total, _ in rows)))
    for name, rows in drafting.items():
        for j in range(1, max(k for _, k in rows)):     # then one token per row until each has k
            ends = [total + j for total, k in rows if k > j]
            forwards.append((name, len(ends), 1, max(ends) - 1))
    return forwards
